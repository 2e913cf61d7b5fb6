"""Vector quantization of encoder outputs (van den Oord et al. 2017, "Neural Discrete Representation
Learning"), as pure functions over a codebook and an explicit, non-trained state.

Quantization (Sec. 3.1, Eq. 1-2): each encoder output ``z_e [D]`` takes the nearest code of the
codebook ``E [K, D]``::

    k = argmin_j ||z_e - e_j||^2,      z_q = e_k.

The decoder sees the straight-through estimate ``z_e + sg(z_q - z_e)`` (Sec. 3.2): its forward value
is ``z_q`` and its Jacobian w.r.t. ``z_e`` is the identity, so the reconstruction gradient at
``z_q`` is copied to the encoder. The training objective is Eq. 3::

    L = -log p(x | z_q) + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2,

of which this module gives the last two terms per example (means over the positions and code
dimensions, ``[B]``): the *commitment* term ``beta ||z_e - sg(e)||^2`` (gradient to the encoder
only, :func:`commitment_loss`) and the *codebook* term ``||sg(z_e) - e||^2`` (gradient to the
codebook only, :func:`codebook_loss`).

Codebook updates (``QuantizerConfig.codebook``):

* ``'loss'``: the codebook is a trained param (``params['codebook'] [K, D]``) moved by the
  codebook term of Eq. 3.
* ``'ema'`` (App. A.1): the codebook is not trained by gradients but set to the running means of
  the encoder outputs assigned to each code; with ``n_i`` the number of this batch's outputs
  assigned to code ``i`` and ``gamma = decay``::

      N_i <- gamma N_i + (1 - gamma) n_i
      m_i <- gamma m_i + (1 - gamma) sum_{j: k_j = i} z_e,j
      e_i  = m_i / N~_i,    N~_i = (N_i + eps) / (sum_l N_l + K eps) * sum_l N_l

  (``N~`` is the Laplace-smoothed count of the Sonnet implementation the paper released, which
  keeps unused codes finite). ``N``, ``m`` and ``E`` are model state (a non-trained collection,
  updated only by a stateful training phase, :class:`gen_jax.model.Phase`), never params; the
  loss is then the reconstruction plus the commitment term only.

Codebook utilization (the "codebook collapse" remedies of later work, e.g. Dhariwal et al. 2020,
"Jukebox", its "random restarts" of embeddings; Razavi et al. 2019, VQ-VAE-2, use the EMA codebook):

* k-means initialization (``kmeans_iters > 0``): the codebook is fitted by k-means (k-means++
  seeding, then Lloyd iterations) to the encoder outputs of the first training batch, computed
  with the freshly initialized encoder (:func:`kmeans`), instead of a random draw ``N(0, I)``;
* dead-code reset (``dead_threshold > 0``, EMA only): after each EMA update, every code whose EMA
  count ``N_i`` is below the threshold takes one of this batch's encoder outputs, drawn at random
  (``reset_sampling='uniform'``) or with probability proportional to its squared distance to its
  code (``'error'``, D^2 sampling as in k-means++: outputs the codebook already represents
  exactly, such as an empty background, are not drawn again), with ``N_i = m_i / e_i =
  dead_threshold`` (:func:`reset_dead_codes`);
* cosine codes (``cosine=True``): outputs and codes are l2-normalized before the lookup (nearest
  = largest cosine), ``z_q`` is a unit vector, and the EMA and k-means centroids are
  renormalized (spherical k-means).

Logged per training step: ``perplexity`` ``exp(H(p))`` of this batch's code histogram,
``codes_used_batch`` (fraction of codes used by the batch), ``codes_reset`` (codes reset this
step) and ``codes_used_window``: the fraction of codes used at least once over the last complete
window of ``usage_window`` steps (set it to the steps of one epoch; 0 until the first window
completes). Over a whole split: :func:`split_code_usage`.

Shapes: encoder outputs ``z_e [..., D]`` (``[B, h, w, D]`` for images), ids ``[...]`` int32,
codebook ``[K, D]``. State (``VectorQuantizer.init`` returns it): ``{'usage': int32 [K],
'window_step': int32 [], 'usage_frac': float32 []}``, and with ``codebook='ema'`` also
``{'codebook': [K, D], 'ema_count': [K], 'ema_sum': [K, D]}``.

Usage (a model's stateful loss)::

    vq = VectorQuantizer(QuantizerConfig(num_codes=512, code_dim=64))
    vq_params, vq_state = vq.init(key, z_e_first_batch)         # once, inside Training.init
    out = vq.quantize(vq_params, vq_state, z_e)                   # VQOutput (straight-through)
    new_state, metrics = vq.update(vq_params, vq_state, z_e, out.ids, key)   # training only
    loss = recon + out.loss                                       # out.loss: [B], Eq. 3's VQ terms
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import Checked, ConfigError

Array = jax.Array
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class QuantizerConfig(Checked):
    """The settings of a vector quantizer (a model config carries them as its own fields).

    Attributes:
      num_codes: ``K``, codebook size (>= 2).
      code_dim: ``D``, code width (>= 2 with ``cosine``).
      beta: commitment weight of Eq. 3 (0.25 in van den Oord et al. 2017, Sec. 4).
      codebook: ``'ema'`` (App. A.1; codebook in the model state) or ``'loss'`` (the codebook
        term of Eq. 3; codebook in the params).
      decay: EMA decay ``gamma`` in ``[0, 1)`` (0.99 in the paper).
      eps: Laplace smoothing ``eps > 0`` of the EMA counts.
      cosine: l2-normalized codes and outputs (nearest by cosine).
      kmeans_iters: Lloyd iterations of the k-means initialization from the first batch's
        encoder outputs; 0 draws the codebook from ``N(0, I)`` (``init_scale`` times).
      dead_threshold: EMA count under which a code is reset to an encoder output of the batch;
        0 = never (``codebook='ema'`` only: a reset rewrites the codebook, which is state).
      reset_sampling: how reset codes draw encoder outputs: ``'error'`` (probability proportional
        to the squared distance to their code) or ``'uniform'``.
      usage_window: steps of the window over which ``codes_used_window`` counts the codes in use
        (one epoch).
      init_scale: standard deviation of the random codebook (``kmeans_iters = 0``).
    """

    num_codes: int = 512
    code_dim: int = 64
    beta: float = 0.25
    codebook: Literal["ema", "loss"] = "ema"
    decay: float = 0.99
    eps: float = 1e-5
    cosine: bool = False
    kmeans_iters: int = 10
    dead_threshold: float = 1.0
    reset_sampling: Literal["error", "uniform"] = "error"
    usage_window: int = 100
    init_scale: float = 1.0

    def __post_init__(self):
        self.require(isinstance(self.num_codes, int) and self.num_codes >= 2, "num_codes",
                     f"a codebook needs an int >= 2 codes, got {self.num_codes!r}")
        self.require(isinstance(self.code_dim, int) and self.code_dim >= 1, "code_dim",
                     f"must be an int >= 1, got {self.code_dim!r}")
        self.require(not self.cosine or self.code_dim >= 2, "code_dim",
                     f"cosine codes live on the unit sphere of R^D and need D >= 2, got {self.code_dim}")
        self.nonnegative("beta", "kmeans_iters", "dead_threshold")
        self.in_range("decay", 0.0, 1.0, hi_open=True)
        self.positive("eps", "usage_window", "init_scale")
        self.require(self.dead_threshold == 0 or self.codebook == "ema", "dead_threshold",
                     "dead-code reset rewrites codebook entries, which needs the EMA codebook (model "
                     "state); use codebook='ema' or dead_threshold=0")


class VQOutput(NamedTuple):
    """What :meth:`VectorQuantizer.quantize` returns for ``z_e [..., D]`` (``B`` the leading axis).

    Attributes:
      z_q: ``[..., D]`` the straight-through estimate ``z + sg(e_k - z)`` (value: the codes;
        Jacobian w.r.t. ``z_e``: the identity; with ``cosine``, ``z`` is the normalized ``z_e``).
      ids: ``[...]`` int32 code ids.
      commitment: ``[B]`` ``mean ||z - sg(e_k)||^2`` per example (unweighted).
      codebook: ``[B]`` ``mean ||sg(z) - e_k||^2`` per example (a gradient only in ``'loss'`` mode).
      loss: ``[B]`` the VQ terms of Eq. 3 this model minimizes: ``beta * commitment`` (+
        ``codebook`` with ``codebook='loss'``).
    """

    z_q: Array
    ids: Array
    commitment: Array
    codebook: Array
    loss: Array


# ------------------------------------------------------------------------------------------
# The pieces (pure functions).
# ------------------------------------------------------------------------------------------


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """``x / max(||x||, eps)`` along ``axis``."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis, keepdims=True), eps * eps))


def squared_distances(z: Array, codebook: Array) -> Array:
    """``||z_n - e_k||^2`` ``[N, K]`` for ``z [N, D]``, ``codebook [K, D]`` (clipped at 0)."""
    d = (jnp.sum(jnp.square(z), -1, keepdims=True) - 2.0 * z @ codebook.T
         + jnp.sum(jnp.square(codebook), -1)[None, :])
    return jnp.maximum(d, 0.0)


def nearest_codes(z: Array, codebook: Array) -> Array:
    """``argmin_k ||z - e_k||^2`` (Eq. 1): int32 ids ``[...]`` for ``z [..., D]`` (ties: lowest id).
    For unit vectors this is also the largest cosine."""
    flat = z.reshape(-1, z.shape[-1])
    return jnp.argmin(squared_distances(flat, codebook), -1).astype(jnp.int32).reshape(z.shape[:-1])


def lookup(codebook: Array, ids: Array) -> Array:
    """``e_ids``: ``[..., D]`` for int ids ``[...]`` (Eq. 2)."""
    return jnp.take(codebook, ids, axis=0)


def straight_through(z_e: Array, z_q: Array) -> Array:
    """``z_e + sg(z_q - z_e)`` (Sec. 3.2): value ``z_q``, identity Jacobian w.r.t. ``z_e``, no
    gradient to ``z_q``."""
    return z_e + sg(z_q - z_e)


def _per_example_mean(x: Array) -> Array:
    return jnp.mean(x.reshape(x.shape[0], -1), -1)


def commitment_loss(z_e: Array, z_q: Array) -> Array:
    """``mean ||z_e - sg(z_q)||^2`` per example ``[B]`` (Eq. 3, third term without ``beta``):
    its gradient reaches the encoder only."""
    return _per_example_mean(jnp.square(z_e - sg(z_q)))


def codebook_loss(z_e: Array, z_q: Array) -> Array:
    """``mean ||sg(z_e) - z_q||^2`` per example ``[B]`` (Eq. 3, second term): its gradient
    reaches the codebook only."""
    return _per_example_mean(jnp.square(sg(z_e) - z_q))


def code_histogram(ids: Array, num_codes: int) -> Array:
    """Counts of each code in ``ids`` (any shape): int32 ``[K]``."""
    return jnp.bincount(ids.reshape(-1), length=num_codes).astype(jnp.int32)


def perplexity(counts: Array) -> Array:
    """``exp(-sum_k p_k log p_k)`` of the histogram ``counts [K]`` (1 = one code, K = uniform)."""
    p = counts.astype(jnp.float32) / jnp.maximum(jnp.sum(counts), 1)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def laplace_smoothed(counts: Array, eps: float) -> Array:
    """``(N_i + eps) / (sum N + K eps) * sum N`` (the EMA counts, Laplace-smoothed) ``[K]``."""
    n = jnp.sum(counts)
    return (counts + eps) / (n + counts.shape[0] * eps) * n


def ema_update(ema_count: Array, ema_sum: Array, z: Array, ids: Array, decay: float, eps: float,
               cosine: bool = False) -> tuple[Array, Array, Array]:
    """One EMA codebook step (App. A.1) for outputs ``z [N, D]`` assigned to ``ids [N]``:
    ``(codebook [K, D], ema_count [K], ema_sum [K, D])`` (module docstring; renormalized codes
    with ``cosine``)."""
    onehot = jax.nn.one_hot(ids, ema_count.shape[0], dtype=z.dtype)        # [N, K]
    count = decay * ema_count + (1.0 - decay) * jnp.sum(onehot, 0)
    total = decay * ema_sum + (1.0 - decay) * onehot.T @ z
    codebook = total / laplace_smoothed(count, eps)[:, None]
    return (l2_normalize(codebook) if cosine else codebook), count, total


def _sample_proportional(key: Array, weights: Array, num: int) -> Array:
    """``num`` indices drawn with replacement with probability ``weights / sum`` (uniform when all
    weights are 0)."""
    w = jnp.where(jnp.sum(weights) > 0, weights, jnp.ones_like(weights))
    return jax.random.categorical(key, jnp.log(jnp.maximum(w, 1e-30)), shape=(num,))


def kmeans_pp_seed(key: Array, z: Array, num_codes: int) -> Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``num_codes`` rows of ``z [N, D]``, each
    drawn with probability proportional to its squared distance to the rows chosen before."""
    k0, key = jax.random.split(key)
    first = z[jax.random.randint(k0, (), 0, z.shape[0])]
    centers = jnp.zeros((num_codes, z.shape[1]), z.dtype).at[0].set(first)
    d2 = jnp.sum(jnp.square(z - first), -1)

    def body(i, carry):
        centers, d2 = carry
        c = z[_sample_proportional(jax.random.fold_in(key, i), d2, 1)[0]]
        return centers.at[i].set(c), jnp.minimum(d2, jnp.sum(jnp.square(z - c), -1))

    return jax.lax.fori_loop(1, num_codes, body, (centers, d2))[0]


def kmeans(key: Array, z: Array, num_codes: int, iters: int, cosine: bool = False) -> tuple[Array, Array]:
    """k-means of ``z [N, D]`` (spherical with ``cosine``): k-means++ seeding then ``iters`` Lloyd
    steps (an empty cluster keeps its centre). Returns ``(codebook [K, D], counts [K])``, the
    counts of the final assignment."""
    z = l2_normalize(z) if cosine else z
    centers = kmeans_pp_seed(key, z, num_codes)

    def lloyd(_, centers):
        onehot = jax.nn.one_hot(nearest_codes(z, centers), num_codes, dtype=z.dtype)   # [N, K]
        n = jnp.sum(onehot, 0)
        mean = (onehot.T @ z) / jnp.maximum(n, 1.0)[:, None]
        new = jnp.where(n[:, None] > 0, mean, centers)
        return l2_normalize(new) if cosine else new

    centers = jax.lax.fori_loop(0, iters, lloyd, centers)
    return centers, jnp.sum(jax.nn.one_hot(nearest_codes(z, centers), num_codes, dtype=z.dtype), 0)


def reset_dead_codes(key: Array, codebook: Array, ema_count: Array, ema_sum: Array, z: Array,
                     threshold: float, sampling: str = "error") -> tuple[Array, Array, Array, Array]:
    """Codes with ``ema_count < threshold`` take rows of ``z [N, D]`` (this batch's outputs, in the
    quantizer's space), drawn uniformly or (``'error'``) proportionally to their squared
    distance to the nearest code; a reset code gets ``N_i = threshold``, ``m_i = threshold * e_i``.
    Returns ``(codebook, ema_count, ema_sum, dead [K] bool)``."""
    dead = ema_count < threshold
    if sampling == "error":
        weights = jnp.min(squared_distances(z, codebook), -1)
    else:
        weights = jnp.ones((z.shape[0],), z.dtype)
    fresh = z[_sample_proportional(key, weights, codebook.shape[0])]               # [K, D]
    codebook = jnp.where(dead[:, None], fresh, codebook)
    ema_count = jnp.where(dead, jnp.asarray(threshold, ema_count.dtype), ema_count)
    ema_sum = jnp.where(dead[:, None], threshold * fresh, ema_sum)
    return codebook, ema_count, ema_sum, dead


# ------------------------------------------------------------------------------------------
# The quantizer: config + state layout + the steps a model calls.
# ------------------------------------------------------------------------------------------


class VectorQuantizer:
    """A vector quantizer of :class:`QuantizerConfig` (module docstring): methods are pure
    functions of ``(params, state, ...)``; ``params`` is ``{'codebook': [K, D]}`` with
    ``codebook='loss'`` and ``{}`` with ``'ema'`` (the codebook is then ``state['codebook']``)."""

    def __init__(self, cfg: QuantizerConfig):
        self.cfg = cfg
        self.num_codes, self.code_dim = cfg.num_codes, cfg.code_dim
        self.ema = cfg.codebook == "ema"

    def _flat(self, z_e: Array) -> Array:
        if z_e.shape[-1] != self.code_dim:
            raise ValueError(f"quantizer: encoder outputs must end in code_dim={self.code_dim} "
                             f"(config.model.code_dim), got shape {tuple(z_e.shape)}")
        z = z_e.reshape(-1, self.code_dim).astype(jnp.float32)
        return l2_normalize(z) if self.cfg.cosine else z

    def init(self, key: Array, z_e: Array) -> tuple[dict, dict]:
        """``(params, state)`` from the encoder outputs ``z_e [..., D]`` of the first batch (k-means
        with ``kmeans_iters > 0``, else ``init_scale * N(0, I)`` codes). k-means needs at least
        ``K`` outputs (``B h w >= num_codes``), refused otherwise."""
        cfg, k = self.cfg, self.num_codes
        z = self._flat(z_e)
        if cfg.kmeans_iters > 0:
            if z.shape[0] < k:
                raise ConfigError(f"config.model.num_codes={k}: the k-means initialization needs at least "
                                 f"{k} encoder outputs, the first batch gives {z.shape[0]} "
                                 f"(raise config.train.batch_size or lower num_codes)")
            codebook, counts = kmeans(key, sg(z), k, cfg.kmeans_iters, cfg.cosine)
        else:
            codebook = cfg.init_scale * jax.random.normal(key, (k, self.code_dim), jnp.float32)
            codebook = l2_normalize(codebook) if cfg.cosine else codebook
            counts = jnp.full((k,), z.shape[0] / k, jnp.float32)   # the uniform assignment
        state = {"usage": jnp.zeros((k,), jnp.int32), "window_step": jnp.zeros((), jnp.int32),
                 "usage_frac": jnp.zeros((), jnp.float32)}
        if self.ema:
            state.update(codebook=codebook, ema_count=counts, ema_sum=codebook * counts[:, None])
            return {}, state
        return {"codebook": codebook}, state

    def codebook(self, params: Mapping, state: Mapping) -> Array:
        """The codebook ``[K, D]`` (from the state with EMA, else from the params)."""
        return state["codebook"] if self.ema else params["codebook"]

    def quantize(self, params: Mapping, state: Mapping, z_e: Array) -> VQOutput:
        """Nearest codes of ``z_e [B, ..., D]`` and Eq. 3's VQ terms (:class:`VQOutput`); no state
        change (evaluation and the forward pass of training alike)."""
        lead = z_e.shape[:-1]
        z = self._flat(z_e).reshape(z_e.shape)
        codebook = self.codebook(params, state)
        if self.ema:
            codebook = sg(codebook)
        elif self.cfg.cosine:
            codebook = l2_normalize(codebook)
        ids = nearest_codes(sg(z), sg(codebook))
        e = lookup(codebook, ids)
        commit, cb = commitment_loss(z, e), codebook_loss(z, e)
        loss = self.cfg.beta * commit + (0.0 if self.ema else cb)
        return VQOutput(z_q=straight_through(z, e), ids=ids.reshape(lead), commitment=commit, codebook=cb,
                        loss=loss)

    def decode_ids(self, params: Mapping, state: Mapping, ids: Array) -> Array:
        """``e_ids`` ``[..., D]`` for int ids in ``[0, K)`` (the caller checks the range)."""
        codebook = self.codebook(params, state)
        return lookup(l2_normalize(codebook) if self.cfg.cosine else codebook, ids)

    def update(self, params: Mapping, state: Mapping, z_e: Array, ids: Array, key: Array) -> tuple[dict, dict]:
        """The training-only state step after a forward pass with ``ids = quantize(...).ids``:
        EMA codebook (App. A.1), dead-code reset, usage window. Returns ``(new state, metrics)``
        (metrics: ``perplexity``, ``codes_used_batch``, ``codes_used_window``, ``codes_reset``)."""
        cfg, k = self.cfg, self.num_codes
        z, flat_ids = sg(self._flat(z_e)), ids.reshape(-1)
        counts = code_histogram(flat_ids, k)
        new = dict(state)
        reset = jnp.zeros((), jnp.float32)
        if self.ema:
            cb, n, m = ema_update(state["ema_count"], state["ema_sum"], z, flat_ids, cfg.decay, cfg.eps, cfg.cosine)
            if cfg.dead_threshold > 0:
                cb, n, m, dead = reset_dead_codes(key, cb, n, m, z, cfg.dead_threshold, cfg.reset_sampling)
                reset = jnp.sum(dead).astype(jnp.float32)
            new.update(codebook=cb, ema_count=n, ema_sum=m)
        usage, t = state["usage"] + counts, state["window_step"] + 1
        full = t >= cfg.usage_window
        new.update(usage=jnp.where(full, 0, usage), window_step=jnp.where(full, 0, t),
                   usage_frac=jnp.where(full, jnp.mean(usage > 0).astype(jnp.float32), state["usage_frac"]))
        metrics = {"perplexity": perplexity(counts), "codes_used_batch": jnp.mean(counts > 0).astype(jnp.float32),
                   "codes_used_window": new["usage_frac"], "codes_reset": reset}
        return new, metrics


# ------------------------------------------------------------------------------------------
# Code usage over a split.
# ------------------------------------------------------------------------------------------


def split_code_usage(encode: Callable[[Any, Array], Array], params: Any, images: np.ndarray, num_codes: int,
                     batch_size: int = 250) -> dict:
    """Code statistics of ``encode(params, x) -> int ids`` over a split ``images [N, H, W, C]``
    (host loop over batches; ``encode`` is jitted here, the last batch padded): ``{'counts':
    int64 [K], 'fraction_used', 'perplexity'}``. Works for any codec of kind ``'ids'``."""
    fn = jax.jit(encode)
    counts = np.zeros((num_codes,), np.int64)
    n = len(images)
    for i in range(0, n, batch_size):
        chunk = np.asarray(images[i:i + batch_size], np.float32)
        m = len(chunk)
        if m < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
        ids = np.asarray(fn(params, chunk))[:m].reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= num_codes):
            raise ValueError(f"split_code_usage: encode returned ids outside [0, {num_codes})")
        counts += np.bincount(ids, minlength=num_codes)
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return {"counts": counts, "fraction_used": float(np.mean(counts > 0)),
            "perplexity": float(np.exp(-np.sum(nz * np.log(nz))))}
