"""CLIP-guided latent editing of a generator ``z -> x`` against any contrastive
:class:`gen_jax.model.Embedder`.

The conventions are :mod:`gen_jax.gan.latent_tools`': the generator is a pure function
``generate(z [N, Z]) -> images [N, H, W, C]`` in ``[0, 1]`` acting on each example independently
(batch norm in inference mode; for a gen_jax GAN ``lambda z: model.codec.decode(params, z)``), the
embedder is the model contract's ``Embedder(embed_image(params, images [N, H, W, C] in [0, 1]) ->
[N, D], embed_text(params, caption_tokens int [N, L]) -> [N, D], dim)`` (both l2-normalized) with
its params passed explicitly, loops are one ``jax.lax.scan`` under ``jax.jit`` with optax
optimizers, and every public function checks its arguments and names the offending one.

* :func:`optimize_latents`: per-example latent optimization (StyleCLIP, Patashnik et al. 2021,
  "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery", Sec. 4, Eq. 1)::

      z* = argmin_z  D_CLIP(G(z), t) + lambda_l2 |z - z0|^2 + lambda_img mse(G(z), G(z0))
                     + lambda_id (1 - cos(F(G(z)), F(G(z0))))

  with ``D_CLIP(x, t) = 1 - cos(E_I(x), E_T(t))``.
* :func:`global_direction`: one unit direction ``d`` for a whole batch of latents, maximizing
  ``mean_i cos(E_I(G(z_i + alpha d)), E_T(t))`` (minus the similarity to a source text ``s``:
  the text-difference target ``E_T(t) - E_T(s)`` of StyleCLIP's global directions, Sec. 6),
  by Adam projected back onto the unit sphere after every step.
* Scoring: :func:`text_embeddings`, :func:`ensemble_embedding`, :func:`clip_similarity`, :func:`latent_distance`,
  :func:`factor_edit_scores` (did the requested factor change, did the others stay).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.gan.latent_tools import _float, _positive_int
from gen_jax.model import Embedder

Array = jax.Array
Generator = Callable[[Array], Array]
Features = Callable[[Array], Array]


class LatentEdit(NamedTuple):
    """The result of :func:`optimize_latents`.

    Attributes:
      z: the edited latents ``[N, Z]``.
      similarity: ``[steps + 1, N]``: ``cos(E_I(G(z_s)), E_T(t))`` of the iterate after ``s``
        steps (row 0 is the start ``z0``, the last row the returned ``z``).
      loss: ``[steps + 1, N]``: the per-example objective of Eq. 1 at the same iterates.
    """

    z: Array
    similarity: Array
    loss: Array


class DirectionEdit(NamedTuple):
    """The result of :func:`global_direction`.

    Attributes:
      direction: the unit direction ``[Z]``.
      objective: ``[steps + 1]``: the batch-mean objective (target similarity, minus the
        source similarity in the directional variant) at the direction after ``s`` steps.
      similarity: ``[N]``: the target similarity ``cos(E_I(G(z_i + alpha d)), E_T(t))`` of
        each latent at the returned direction.
    """

    direction: Array
    objective: Array
    similarity: Array


# ----------------------------------------------------------------------------- checks

def _check_embedder(embedder) -> Embedder:
    if not (hasattr(embedder, "embed_image") and hasattr(embedder, "embed_text")):
        raise ValueError(f"embedder must be a gen_jax.model.Embedder (embed_image, embed_text, dim), "
                         f"got {type(embedder).__name__}")
    return embedder


def _tokens(tokens, name: str, n: Optional[int]) -> Array:
    """int ``[M, L]`` (``[L]`` is one caption) with ``M = 1`` or ``M = n`` when ``n`` is given."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"{name} must be caption token ids [L] or [M, L], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
    if n is not None and tokens.shape[0] not in (1, n):
        raise ValueError(f"{name} holds {tokens.shape[0]} captions for {n} latents; give one caption "
                         f"([L] or [1, L]) or one per latent ([{n}, L])")
    return tokens.astype(jnp.int32)


def _nonnegative(v, name: str) -> float:
    if not float(v) >= 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return float(v)


def _positive(v, name: str) -> float:
    if not float(v) > 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _check_images(generate: Generator, z: Array, fn: str):
    out = jax.eval_shape(generate, z)
    if len(out.shape) != 4 or out.shape[0] != z.shape[0]:
        raise ValueError(f"{fn}: generate(z) must return images [N={z.shape[0]}, H, W, C], got shape "
                         f"{tuple(out.shape)}")


# ----------------------------------------------------------------------------- scoring

def text_embeddings(embedder: Embedder, clip_params, caption_tokens: Array) -> Array:
    """``E_T(t)``: caption token ids ``[M, L]`` (or one caption ``[L]``) -> ``[M, D]``
    (l2-normalized by the embedder's contract)."""
    embedder = _check_embedder(embedder)
    tokens = _tokens(caption_tokens, "caption_tokens", None)
    return jnp.asarray(embedder.embed_text(clip_params, tokens), jnp.float32)


def ensemble_embedding(embedder: Embedder, clip_params, caption_tokens: Array) -> Array:
    """One text embedding ``[D]`` for captions ``[M, L]``: the mean of their l2-normalized
    embeddings, renormalized (prompt ensembling, Radford et al. 2021, Sec. 3.1.4)."""
    e = text_embeddings(embedder, clip_params, caption_tokens)
    m = jnp.mean(e, axis=0)
    return m / jnp.maximum(jnp.linalg.norm(m), jnp.finfo(m.dtype).tiny)


def _cos(img_emb: Array, txt_emb: Array) -> Array:
    """Row-wise cosine ``[N]`` of ``[N, D]`` and ``[N or 1, D]`` embeddings (renormalized here
    too, so an embedder's rounding cannot push it outside [-1, 1] by more than float error)."""
    tiny = jnp.finfo(jnp.float32).tiny
    a = img_emb / jnp.maximum(jnp.linalg.norm(img_emb, axis=-1, keepdims=True), tiny)
    b = txt_emb / jnp.maximum(jnp.linalg.norm(txt_emb, axis=-1, keepdims=True), tiny)
    return jnp.sum(a * b, axis=-1)


def clip_similarity(embedder: Embedder, clip_params, images: Array, caption_tokens: Array) -> Array:
    """``cos(E_I(x_i), E_T(t_i))`` ``[N]`` for images ``[N, H, W, C]`` in ``[0, 1]`` and caption
    ids ``[N, L]`` (or one caption ``[L]`` / ``[1, L]`` for all)."""
    embedder = _check_embedder(embedder)
    images = _float(images, "images", 4, "[N, H, W, C]")
    tokens = _tokens(caption_tokens, "caption_tokens", images.shape[0])
    return _cos(embedder.embed_image(clip_params, images), embedder.embed_text(clip_params, tokens))


def latent_distance(z0: Array, z: Array) -> Array:
    """``|z_i - z0_i|_2`` ``[N]`` of latents ``[N, Z]``."""
    z0 = _float(z0, "z0", 2, "[N, Z]")
    z = _float(z, "z", 2, "[N, Z]")
    if z0.shape != z.shape:
        raise ValueError(f"latent_distance: z0 {z0.shape} and z {z.shape} must have the same shape [N, Z]")
    return jnp.linalg.norm(z - z0, axis=1)


def factor_edit_scores(before: np.ndarray, after: np.ndarray, factor: int, target) -> dict:
    """How well edits changed one factor: ``before``, ``after`` int ``[N, F]`` (a factor
    predictor's reading of each start and edited image, e.g. the shapes feature network's
    heads), ``factor`` the column the edit asked to change, ``target`` its requested value
    (int, or int ``[N]`` per edit).

    Returns ``{'success': fraction with after[:, factor] == target, 'kept': fraction with every
    other column unchanged, 'both': fraction with both, 'n': N}``.
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.ndim != 2:
        raise ValueError(f"before must be factor ids [N, F], got shape {before.shape}")
    if after.shape != before.shape:
        raise ValueError(f"after {after.shape} must have the shape of before {before.shape} ([N, F])")
    if isinstance(factor, bool) or int(factor) != factor or not 0 <= factor < before.shape[1]:
        raise ValueError(f"factor must be a column index in [0, {before.shape[1]}), got {factor!r}")
    target = np.broadcast_to(np.asarray(target), (before.shape[0],))
    others = [j for j in range(before.shape[1]) if j != factor]
    hit = after[:, factor] == target
    kept = np.all(after[:, others] == before[:, others], axis=1)
    n = max(before.shape[0], 1)
    return {"success": float(hit.sum() / n), "kept": float(kept.sum() / n),
            "both": float((hit & kept).sum() / n), "n": int(before.shape[0])}


# ----------------------------------------------------------------------------- per-example optimization

@partial(jax.jit, static_argnames=("generate", "embedder", "identity_features", "steps"))
def _optimize_loop(generate, embedder, identity_features, clip_params, z0, txt, steps, learning_rate,
                   l2_weight, image_weight, identity_weight):
    opt = optax.adam(learning_rate)
    x0 = jax.lax.stop_gradient(generate(z0).astype(jnp.float32))
    f0 = None if identity_features is None else jax.lax.stop_gradient(identity_features(x0))

    def per_example(z):
        x = generate(z).astype(jnp.float32)
        sim = _cos(embedder.embed_image(clip_params, x), txt)
        loss = (1.0 - sim) + l2_weight * jnp.sum(jnp.square(z - z0), axis=1)
        loss = loss + image_weight * jnp.mean(jnp.square(x - x0).reshape(x.shape[0], -1), axis=1)
        if identity_features is not None:
            loss = loss + identity_weight * (1.0 - _cos(identity_features(x), f0))
        return loss, sim

    def objective(z):
        # A sum of per-example terms: each row of z gets its own gradient and Adam is
        # per-coordinate, so every latent is edited as if it were alone.
        loss, sim = per_example(z)
        return jnp.sum(loss), (loss, sim)

    def step(carry, _):
        z, opt_state = carry
        (_, (loss, sim)), grad = jax.value_and_grad(objective, has_aux=True)(z)
        updates, opt_state = opt.update(grad, opt_state, z)
        return (optax.apply_updates(z, updates), opt_state), (sim, loss)

    (z, _), (sims, losses) = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
    last_loss, last_sim = per_example(z)
    return z, jnp.concatenate([sims, last_sim[None]]), jnp.concatenate([losses, last_loss[None]])


def optimize_latents(generate: Generator, embedder: Embedder, clip_params, z0: Array, caption_tokens: Array,
                     steps: int = 100, learning_rate: float = 0.05, l2_weight: float = 0.01,
                     image_weight: float = 0.0, identity_weight: float = 0.0,
                     identity_features: Optional[Features] = None) -> LatentEdit:
    """StyleCLIP latent optimization (Patashnik et al. 2021, Sec. 4, Eq. 1), per example::

        z* = argmin_z  (1 - cos(E_I(G(z)), E_T(t)))  +  l2_weight |z - z0|_2^2
                       + image_weight mean_pixels (G(z) - G(z0))^2
                       + identity_weight (1 - cos(F(G(z)), F(G(z0))))

    by ``optax.adam(learning_rate)`` for ``steps`` steps from ``z = z0`` (one ``lax.scan``
    under ``jit``). The first term is Eq. 1's ``D_CLIP``; the second its ``lambda_L2`` term
    (squared here, smooth at ``z0``; the paper optimizes ``w`` in StyleGAN's W+ space, here the
    generator's input ``z``); the last two stand for Eq. 1's identity loss ``L_ID = 1 - <R(G(w_s)),
    R(G(w))>`` (Eq. 2; ArcFace ``R`` there): an image-space L2 to the start image, or a feature
    network ``F`` (e.g. a classifier's penultimate features, the shapes feature network).

    Args:
      generate: ``z [N, Z] -> images [N, H, W, C]`` in [0, 1], acting on each example
        independently (a static argument of the compiled loop).
      embedder: the contrastive model's :class:`~gen_jax.model.Embedder` (static).
      clip_params: its params (an argument of the compiled loop).
      z0: start latents ``[N, Z]``.
      caption_tokens: the target text: int ids ``[L]`` / ``[1, L]`` (one for all) or ``[N, L]``.
      steps: Adam steps (>= 1).
      learning_rate: Adam step size (> 0).
      l2_weight: ``lambda_L2`` (>= 0).
      image_weight: weight (>= 0) of the pixel MSE to ``G(z0)``.
      identity_weight: weight (>= 0) of ``1 - cos(F(G(z)), F(G(z0)))``; needs
        ``identity_features``.
      identity_features: ``F: images [N, H, W, C] -> [N, K]`` (static), or None.

    Returns:
      :class:`LatentEdit` ``(z [N, Z], similarity [steps + 1, N], loss [steps + 1, N])``.
    """
    embedder = _check_embedder(embedder)
    z0 = _float(z0, "z0", 2, "[N, Z]")
    tokens = _tokens(caption_tokens, "caption_tokens", z0.shape[0])
    steps = _positive_int(steps, "steps")
    _positive(learning_rate, "learning_rate")
    _nonnegative(l2_weight, "l2_weight")
    _nonnegative(image_weight, "image_weight")
    if _nonnegative(identity_weight, "identity_weight") > 0 and identity_features is None:
        raise ValueError("identity_weight > 0 needs identity_features (images [N, H, W, C] -> features [N, K])")
    _check_images(generate, z0, "optimize_latents")
    txt = jnp.asarray(embedder.embed_text(clip_params, tokens), jnp.float32)
    z, sim, loss = _optimize_loop(generate, embedder, identity_features if identity_weight > 0 else None,
                                  clip_params, z0, txt, steps, jnp.float32(learning_rate), jnp.float32(l2_weight),
                                  jnp.float32(image_weight), jnp.float32(identity_weight))
    return LatentEdit(z, sim, loss)


# ----------------------------------------------------------------------------- global direction

def _unit(v: Array) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)


@partial(jax.jit, static_argnames=("generate", "embedder", "steps"))
def _direction_loop(generate, embedder, clip_params, z, d0, target, source, source_weight, alpha, steps,
                    learning_rate):
    opt = optax.adam(learning_rate)

    def sims(d):
        e = embedder.embed_image(clip_params, generate(z + alpha * d).astype(jnp.float32))
        return _cos(e, target), _cos(e, source)

    def objective(d):
        st, ss = sims(d)
        return jnp.mean(st) - source_weight * jnp.mean(ss)

    def step(d, opt_state):
        value, grad = jax.value_and_grad(objective)(d)
        # The Riemannian gradient on the sphere: without removing the radial part (the
        # objective grows with |d|, a longer edit), Adam's moments would accumulate a
        # component the renormalization undoes, and the iterate drifts off the optimum.
        grad = grad - jnp.dot(grad, d) * d
        updates, opt_state = opt.update(-grad, opt_state, d)  # ascent
        return _unit(optax.apply_updates(d, updates)), opt_state, value

    def body(carry, _):
        d, opt_state = carry
        d, opt_state, value = step(d, opt_state)
        return (d, opt_state), value

    (d, _), values = jax.lax.scan(body, (d0, opt.init(d0)), None, length=steps)
    return d, jnp.concatenate([values, objective(d)[None]]), sims(d)[0]


def global_direction(generate: Generator, embedder: Embedder, clip_params, z: Array, target_tokens: Array,
                     source_tokens: Optional[Array] = None, alpha: float = 2.0, steps: int = 100,
                     learning_rate: float = 0.05, key: Optional[Array] = None,
                     init: Optional[Array] = None) -> DirectionEdit:
    """One edit direction for a batch of latents, guided by CLIP::

        d* = argmax_{|d| = 1}  mean_i cos(E_I(G(z_i + alpha d)), E_T(t))
                               [ - mean_i cos(E_I(G(z_i + alpha d)), E_T(s)) ]

    The first term is StyleCLIP's ``1 - D_CLIP`` (Patashnik et al. 2021, Eq. 1) with one edit
    shared by every latent instead of one per latent (``E_T`` of several captions is their
    prompt ensemble, :func:`ensemble_embedding`); with a source text ``s`` (the
    *directional* variant) the objective is ``mean_i <E_I(G(z_i + alpha d)), E_T(t) - E_T(s)>``
    of the l2-normalized image embeddings: the text-difference target ``Delta t`` of StyleCLIP's
    global directions (Sec. 6), which rewards moving *from* ``s`` *to* ``t`` rather than
    anything that merely resembles ``t``. Solved by Adam ascent (``optax.adam(learning_rate)``)
    with ``d`` projected back onto the unit sphere after every step (projected gradient), for
    ``steps`` steps, one ``lax.scan`` under ``jit``.

    Args:
      generate: ``z [N, Z] -> images [N, H, W, C]`` in [0, 1] (static).
      embedder, clip_params: the contrastive model and its params.
      z: the batch of start latents ``[N, Z]``.
      target_tokens: the target text, int ids ``[L]`` (one caption) or ``[M, L]`` (a prompt
        ensemble, :func:`ensemble_embedding`: e.g. the target attribute in every context).
      source_tokens: the source text (the directional variant), ``[L]`` or ``[M', L]``, or None.
      alpha: the edit strength (> 0): images are ``G(z_i + alpha d)``.
      steps: Adam steps (>= 1).
      learning_rate: Adam step size (> 0).
      key: PRNG key of a random unit start (``N(0, I)`` normalized) when ``init`` is None.
      init: a start direction ``[Z]`` (normalized here), or None.

    Returns:
      :class:`DirectionEdit` ``(direction [Z] of unit norm, objective [steps + 1], similarity [N])``.
    """
    embedder = _check_embedder(embedder)
    z = _float(z, "z", 2, "[N, Z]")
    target = _tokens(target_tokens, "target_tokens", None)
    source = None if source_tokens is None else _tokens(source_tokens, "source_tokens", None)
    _positive(alpha, "alpha")
    steps = _positive_int(steps, "steps")
    _positive(learning_rate, "learning_rate")
    if init is None:
        if key is None:
            raise ValueError("global_direction: give key (a random start direction) or init (a direction [Z])")
        d0 = jax.random.normal(key, (z.shape[1],), jnp.float32)
    else:
        d0 = _float(init, "init", 1, "[Z]").astype(jnp.float32)
        if d0.shape[0] != z.shape[1]:
            raise ValueError(f"init {d0.shape} must be a direction [Z] with Z = {z.shape[1]} of z {z.shape}")
    if not float(jnp.linalg.norm(d0)) > 0:
        raise ValueError("init must be a nonzero direction")
    _check_images(generate, z, "global_direction")
    t = ensemble_embedding(embedder, clip_params, target)[None]
    s = t if source is None else ensemble_embedding(embedder, clip_params, source)[None]
    d, obj, sim = _direction_loop(generate, embedder, clip_params, z.astype(jnp.float32), _unit(d0), t, s,
                                  jnp.float32(0.0 if source is None else 1.0), jnp.float32(alpha), steps,
                                  jnp.float32(learning_rate))
    return DirectionEdit(d, obj, sim)


def apply_direction(z: Array, direction: Array, alpha: float) -> Array:
    """The edited latents ``z + alpha * direction``: ``z [N, Z]``, ``direction [Z]`` -> ``[N, Z]``."""
    z = _float(z, "z", 2, "[N, Z]")
    direction = _float(direction, "direction", 1, "[Z]")
    if direction.shape[0] != z.shape[1]:
        raise ValueError(f"direction {direction.shape} must be [Z] with Z = {z.shape[1]} of z {z.shape}")
    return z + jnp.asarray(alpha, z.dtype) * direction.astype(z.dtype)
