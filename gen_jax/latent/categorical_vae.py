"""A VAE with categorical latents trained by REINFORCE + baselines (NVIL) or the Gumbel-softmax
relaxation, ``make_categorical_vae(config.model, info)``.

Generative model: ``N`` independent categorical latents of ``K`` classes under the uniform
prior, ``z_n ~ U{1..K}``, and ``x | z ~ p_theta(x | z)`` a per-pixel likelihood
(:class:`gen_jax.latent.objectives.PixelLikelihood`) of a decoder fed the one-hot codes
``[B, N K]``. Amortized posterior ``q_phi(z | x) = prod_n Cat(z_n; softmax(l_n(x)))`` with
encoder logits ``l [B, N, K]``. The ELBO (Kingma & Welling 2014, Eq. 3) with the KL to the
discrete prior in closed form (:func:`gen_jax.latent.gumbel.kl_to_uniform`)::

    L(x) = E_q[log p(x | z)] - sum_n KL(Cat(softmax(l_n)) || U{1..K}),
    KL_n = sum_k q_nk log q_nk + log K.

Only the reconstruction expectation needs a gradient estimator for ``phi`` (the KL gradient
is exact); ``config.model.estimator`` chooses it:

* ``'reinforce'``: the score-function estimator (Williams 1992; Mohamed et al. 2020, Sec. 4)
  with NVIL's variance reduction (Mnih & Gregor 2014, Sec. 3): learning signal
  ``s = log p(x | z)``, ``z ~ q`` drawn without gradient, centred by an input-dependent
  baseline ``b_psi(x)`` (an MLP trained to minimize ``E[(s - c - b_psi(x))^2]``, Sec. 3.1)
  and a moving average ``c`` of ``s - b_psi(x)``, and divided by ``max(1, sqrt(v))`` with
  ``v`` a moving average of the centred signal's variance (variance normalisation,
  Sec. 3.2)::

      A = (s - b_psi(x) - c) / max(1, sqrt(v)),   surrogate = stop_gradient(A) log q_phi(z | x)

  (:func:`gen_jax.distributions.gradient_estimators.score_function_surrogate`). ``c`` and
  ``v`` are updated after use, from the batch's signals, so ``A``'s baseline never depends
  on the draw it multiplies and the estimator stays unbiased (up to the positive scale).
  With ``reinforce_samples = S > 1`` each example draws ``S`` codes and the leave-one-out mean
  of the other draws' signals replaces ``b_psi(x)`` (Kool et al. 2019; VIMCO's baseline,
  Mnih & Rezende 2016, Sec. 3).
* ``'gumbel'``: the Gumbel-softmax / Concrete relaxation (Jang et al. 2017, Eq. 1; Maddison
  et al. 2017, Def. 1; :func:`gen_jax.latent.gumbel.gumbel_softmax`, optionally
  straight-through): the decoder reads the relaxed sample ``y [B, N, K]`` at temperature
  ``tau_t`` (annealed over training, :func:`gen_jax.latent.gumbel.anneal`; Jang et al.
  anneal ``tau`` exponentially to 0.5, Sec. 4), so the gradient is pathwise but of a
  relaxed, biased objective; the KL term is the categorical closed form (as in Jang et al.'s
  VAE experiments), not the relaxed density.

Both train one stateful phase whose model state ``{'categorical_vae': {step, signal_mean,
signal_var}}`` holds the step (for ``tau_t``) and NVIL's moving averages.

Capabilities (the VAE's, :mod:`gen_jax.latent.vae`, with a discrete code):

* ``likelihood`` (kind ``'elbo'``): ``log_prob(params, batch, key) -> [B]``, the ELBO of the
  *discrete* model (one-hot ``z ~ q``, never relaxed, so both estimators are scored alike),
  its reconstruction term averaged over ``elbo_samples`` draws of ``z``, the KL exact, plus
  the likelihood's ``D log K`` (the density of the dequantized data, the README's
  Conventions); absent for the Bernoulli decoder;
* ``sampler.sample(params, key, num) -> [num, H, W, C]`` in ``[0, 1]``: ``z`` uniform, then
  ``codec.decode(params, z, key=k_x)``;
* ``codec`` (kind ``'ids'``): ``encode(params, x) -> int32 [B, N]`` (the posterior mode) and
  ``decode(params, ids, cond=None, key=None) -> [B, H, W, C]`` (the mean of ``p(x | z)``
  without a key, a draw with one).

Shapes: images ``[B, H, W, C]`` (the dataset's), logits ``[B, N, K]``, ids int32 ``[B, N]``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.checks import DataSpec, InputError
from gen_jax.checks import check_ids as check_id_range
from gen_jax.config import Checked, typed
from gen_jax.distributions import gradient_estimators as ge
from gen_jax.latent import gumbel, networks, objectives
from gen_jax.model import Codec, GenerativeModel, Likelihood, Phase, Sampler, Training, check_image_batch

STATE = "categorical_vae"
Estimator = Literal["reinforce", "gumbel"]


@dataclasses.dataclass(frozen=True)
class CategoricalVAEConfig(Checked):
    """``config.model`` of the categorical VAE.

    Attributes:
      name: model name (tables, file names).
      estimator: ``'reinforce'`` (NVIL) or ``'gumbel'`` (the relaxation).
      num_latents: ``N`` categorical latents.
      num_classes: ``K`` classes each (``>= 2``).
      hidden: dense widths of the encoder (the decoder uses them reversed).
      activation: one of :data:`gen_jax.latent.networks.ACTIVATIONS`.
      likelihood, num_mixtures: the pixel likelihood (:data:`gen_jax.latent.objectives.LIKELIHOODS`).
      elbo_samples: draws of ``z`` per example of the evaluation ELBO's reconstruction term.
      baseline_hidden: hidden widths of NVIL's baseline MLP ``b_psi(x)`` (``()``: linear in ``x``).
      reinforce_samples: ``S`` draws of ``z`` per example for REINFORCE. ``S > 1`` replaces the
        baseline MLP by the leave-one-out baseline of the other ``S - 1`` draws' signals
        (Kool, van Hoof & Welling 2019; Mnih & Rezende 2016, Sec. 3;
        :func:`gen_jax.distributions.gradient_estimators.leave_one_out`); the moving averages
        and the variance normalisation stay.
      signal_decay: decay of NVIL's moving averages ``c`` and ``v`` (Mnih & Gregor use 0.8).
      variance_normalisation: divide the centred signal by ``max(1, sqrt(v))`` (Sec. 3.2).
      tau_start, tau_end, tau_steps, tau_schedule: the Gumbel-softmax temperature's schedule.
      hard: straight-through Gumbel-softmax (one-hot forward values).
      kl_warmup_steps: the training objective's KL weight grows linearly from 0 to 1 over
        these steps (0: always 1; the KL annealing of Bowman et al. 2016, Sec. 3.1, against
        the collapse of the posterior onto the prior). Only training: ``log_prob`` and the
        logged ``elbo`` always weigh the KL by 1.
    """

    name: str = "categorical_vae"
    estimator: Estimator = "reinforce"
    num_latents: int = 20
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)
    activation: networks.Activation = "gelu"
    likelihood: objectives.PixelLikelihoodKind = "logistic_mixture"
    num_mixtures: int = 5
    elbo_samples: int = 16
    baseline_hidden: tuple[int, ...] = (128,)
    reinforce_samples: int = 1
    signal_decay: float = 0.9
    variance_normalisation: bool = True
    tau_start: float = 1.0
    tau_end: float = 0.5
    tau_steps: int = 3000
    tau_schedule: gumbel.ScheduleKind = "exponential"
    hard: bool = False
    kl_warmup_steps: int = 0

    def __post_init__(self):
        self.positive("num_latents", "num_mixtures", "elbo_samples", "reinforce_samples")
        self.require(self.num_classes >= 2, "num_classes", f"a categorical latent needs >= 2 classes, got {self.num_classes}")
        self.require(bool(self.hidden) and all(h >= 1 for h in self.hidden), "hidden",
                     f"need positive widths, got {self.hidden}")
        self.require(all(h >= 1 for h in self.baseline_hidden), "baseline_hidden",
                     f"widths must be >= 1, got {self.baseline_hidden}")
        self.in_range("signal_decay", 0.0, 1.0, hi_open=True)
        self.nonnegative("kl_warmup_steps")
        msg = gumbel.check_schedule(float(self.tau_start), float(self.tau_end), self.tau_steps, self.tau_schedule,
                                    "tau", positive=True)
        if msg:
            self.require(False, msg.split(" ", 1)[0].rstrip(":"), msg.split(" ", 1)[1])


class CategoricalVAENet(nn.Module):
    """Encoder ``x -> logits [B, N, K]``, decoder ``codes [B, N, K] -> [B, H, W, F]`` and,
    for REINFORCE, the baseline ``b_psi(x) -> [B]``."""

    cfg: CategoricalVAEConfig
    image_shape: tuple[int, int, int]
    out_features: int

    def setup(self):
        cfg = self.cfg
        self.encoder = networks.MLPEncoder(cfg.hidden, cfg.num_latents * cfg.num_classes, cfg.activation,
                                           gaussian=False)
        self.decoder = networks.MLPDecoder(tuple(reversed(cfg.hidden)), self.image_shape, self.out_features,
                                           cfg.activation)
        if cfg.estimator == "reinforce" and cfg.reinforce_samples == 1:
            self.baseline_net = networks.MLPEncoder(cfg.baseline_hidden, 1, cfg.activation, gaussian=False)

    def logits(self, x):
        out = self.encoder(2.0 * x - 1.0)
        return out.reshape(x.shape[0], self.cfg.num_latents, self.cfg.num_classes)

    def decode(self, codes):
        return self.decoder(codes.reshape(codes.shape[0], -1))

    def baseline(self, x):
        return self.baseline_net(2.0 * x - 1.0)[:, 0]

    def __call__(self, x):
        out = self.decode(jax.nn.softmax(self.logits(x), -1))
        if self.cfg.estimator == "reinforce" and self.cfg.reinforce_samples == 1:
            return out, self.baseline(x)
        return out


def nvil_signal(signal, baseline, stats, decay: float, normalise: bool):
    """NVIL's centred, normalised learning signal and the updated moving averages (Mnih &
    Gregor 2014, Secs. 3.1-3.2).

    Args:
      signal: learning signals ``s`` (``[S, B]``); baseline: ``b_psi(x)`` or the leave-one-out
        baseline, broadcastable to ``signal``.
      stats: ``{'signal_mean': c, 'signal_var': v}`` (scalars) from earlier batches.

    Returns:
      ``(A, new_stats)`` (``A`` of ``signal``'s shape) with ``A = (s - b - c) / max(1, sqrt(v))`` (no gradient) and
      ``c' = decay c + (1 - decay) mean(s - b)``, ``v' = decay v + (1 - decay) mean((s - b - c)^2)``.
    """
    centred = jax.lax.stop_gradient(signal - baseline)
    c, v = stats["signal_mean"], stats["signal_var"]
    a = centred - c
    scale = jnp.maximum(1.0, jnp.sqrt(v)) if normalise else 1.0
    new = {"signal_mean": ge.moving_average(c, centred, decay),
           "signal_var": ge.moving_average(v, jnp.square(a), decay)}
    return a / scale, new


def categorical_log_q(logits, ids):
    """``log q(z | x) = sum_n log softmax(l_n)[z_n]``: logits ``[B, N, K]``, ids ``[B, N]`` -> ``[B]``."""
    lp = jax.nn.log_softmax(logits, -1)
    return jnp.sum(jnp.take_along_axis(lp, ids[..., None], -1)[..., 0], -1)


def make_categorical_vae(cfg: Any, info: Any) -> GenerativeModel:
    """The categorical VAE (module docstring) on a dataset with ``info`` (``image_shape``,
    ``num_levels``): a :class:`GenerativeModel` of family ``'latent'``.

    Raises:
      gen_jax.config.FieldError (a ``ConfigError``) naming ``config.model.<field>`` for a bad
      field, e.g. an ``estimator`` other than ``'reinforce'`` / ``'gumbel'``.
    """
    cfg = typed(CategoricalVAEConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    lik = objectives.PixelLikelihood(cfg.likelihood, image_shape, int(info.num_levels), cfg.num_mixtures)
    net = CategoricalVAENet(cfg, image_shape, lik.out_features)
    n, k = cfg.num_latents, cfg.num_classes

    def images(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)
        return x.astype(jnp.float32)

    def apply(params, *args, method):
        return net.apply({"params": params}, *args, method=method)

    def init(key, batch):
        return net.init(key, images(batch["image"])[:1])["params"]

    def init_model_state(key, batch):
        del key, batch
        return {STATE: {"step": jnp.zeros((), jnp.int32), "signal_mean": jnp.zeros((), jnp.float32),
                        "signal_var": jnp.ones((), jnp.float32)}}

    def recon(params, codes, target):
        return lik.log_prob(apply(params, codes, method=CategoricalVAENet.decode), target)   # [B]

    def kl(logits):
        return jnp.sum(gumbel.kl_to_uniform(logits), -1)                                     # [B]

    def reinforce_loss(params, st, x, target, logits, key, beta):
        s_ = cfg.reinforce_samples
        ids = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1,
                                     shape=(s_,) + logits.shape[:-1])                    # [S, B, N]
        tiled = jnp.broadcast_to(target[None], (s_,) + target.shape).reshape((-1,) + target.shape[1:])
        rec = recon(params, jax.nn.one_hot(ids, k, dtype=jnp.float32).reshape(-1, n, k), tiled)
        rec = rec.reshape(s_, -1)                                                         # [S, B], decoder grad
        if s_ == 1:
            b = apply(params, x, method=CategoricalVAENet.baseline)[None]                 # [1, B] b_psi(x)
        else:
            b = (jnp.sum(rec, 0, keepdims=True) - rec) / (s_ - 1)                         # [S, B] leave-one-out
        a, new = nvil_signal(rec, b, st, cfg.signal_decay, cfg.variance_normalisation)
        log_q = categorical_log_q(jnp.broadcast_to(logits, (s_,) + logits.shape), ids)    # [S, B]
        surrogate = jnp.mean(ge.score_function_surrogate(log_q, a), 0)                   # [B], encoder grad
        objective = jnp.mean(rec, 0) - kl(logits)
        loss = -jnp.mean(jnp.mean(rec, 0) - beta * kl(logits) + surrogate)
        m = {"signal_mean": new["signal_mean"], "signal_var": new["signal_var"]}
        if s_ == 1:
            base_mse = jnp.square(jax.lax.stop_gradient(rec - st["signal_mean"]) - b)   # baseline grad
            loss = loss + jnp.mean(base_mse)
            m["baseline_mse"] = jnp.mean(base_mse)
        return loss, objective, jnp.mean(rec, 0), m, new

    def gumbel_loss(params, st, x, target, logits, key, beta):
        del x
        tau = gumbel.anneal(st["step"], cfg.tau_start, cfg.tau_end, cfg.tau_steps, cfg.tau_schedule)
        y = gumbel.gumbel_softmax(key, logits, tau, hard=cfg.hard)                        # [B, N, K]
        rec = recon(params, y, target)
        objective = rec - kl(logits)
        new = {"signal_mean": st["signal_mean"], "signal_var": st["signal_var"]}
        return -jnp.mean(rec - beta * kl(logits)), objective, rec, {"tau": tau}, new

    def loss(params, state, batch, key):
        """The negative (relaxed, for ``'gumbel'``) ELBO of the batch plus, for ``'reinforce'``,
        the surrogate and the baseline's squared error; nats per example."""
        x = images(batch["image"])
        st = state[STATE]
        k_z, k_deq = jax.random.split(key)
        target = lik.target(k_deq, x)
        logits = apply(params, x, method=CategoricalVAENet.logits)                       # [B, N, K]
        fn = reinforce_loss if cfg.estimator == "reinforce" else gumbel_loss
        beta = (jnp.minimum(1.0, st["step"].astype(jnp.float32) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps
                else jnp.float32(1.0))
        value, objective, rec, extra, new = fn(params, st, x, target, logits, k_z, beta)
        m = {"elbo": jnp.mean(objective), "recon": jnp.mean(rec), "kl": jnp.mean(kl(logits)), "kl_weight": beta,
             **extra}
        return value, (m, {**state, STATE: {"step": st["step"] + 1, **new}})

    def log_prob(params, batch, key):
        """ELBO of the discrete model (``elbo_samples`` draws of one-hot ``z``) + ``D log K``: ``[B]``."""
        x = images(batch["image"])
        k_deq, k_z = jax.random.split(key)
        target = lik.target(k_deq, x)
        logits = apply(params, x, method=CategoricalVAENet.logits)

        def one(_, kk):
            ids = jax.random.categorical(kk, logits, axis=-1)
            return None, recon(params, jax.nn.one_hot(ids, k, dtype=jnp.float32), target)

        _, recs = jax.lax.scan(one, None, jax.random.split(k_z, cfg.elbo_samples))       # [S, B]
        return jnp.mean(recs, 0) - kl(logits) + lik.density_offset

    def check_codes(ids, where="decode: ids"):
        if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise InputError(f"{where}: must be an int array [B, {n}] of class ids, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim != 2 or ids.shape[1] != n:
            raise InputError(f"{where} must be [B, {n}] (one id per latent), got shape {tuple(ids.shape)}")
        check_id_range(ids, k, where, "class ids")
        return jnp.asarray(ids, jnp.int32)

    def encode(params, x, cond=None):
        del cond
        return jnp.argmax(apply(params, images(x, "encode: x"), method=CategoricalVAENet.logits), -1).astype(jnp.int32)

    def decode(params, ids, cond=None, key=None):
        del cond
        out = apply(params, jax.nn.one_hot(check_codes(ids), k, dtype=jnp.float32), method=CategoricalVAENet.decode)
        return lik.mean(out) if key is None else lik.sample(key, out).astype(jnp.float32)

    def sample(params, key, num, cond=None):
        del cond
        k_z, k_x = jax.random.split(key)
        return decode(params, jax.random.randint(k_z, (num, n), 0, k, jnp.int32), key=k_x)

    likelihood = None if lik.density_offset is None else Likelihood(log_prob, "elbo")
    phase = Phase(None, loss=loss, name=cfg.estimator, stateful=True)
    return GenerativeModel(
        name=cfg.name, family="latent",
        training=Training(init=init, phases=(phase,), init_model_state=init_model_state),
        sampler=Sampler(sample, "image"), likelihood=likelihood, codec=Codec(encode, decode, kind="ids"),
        data=DataSpec(image_shape, int(info.num_levels), 0))
