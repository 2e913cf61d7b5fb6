"""An image flow as a :class:`~gen_jax.model.GenerativeModel` bundle (shared by Glow,
RealNVP and the image MAF).

The flow is one bijector ``f`` from dequantized data ``y`` on ``[0, 1)^D`` (images
``[B, H, W, C]``) to a flat ``eps [B, D]`` with base ``N(0, I)``: its pre-processing
(``y - 0.5`` or logit) and its learned priors (:mod:`gen_jax.flows.multiscale`) are
bijectors in the chain, so the change of variables (Dinh et al. 2017, Eq. 3)

    log p(y) = log N(f(y); 0, I) + log|det df/dy|

is the exact log density on ``[0, 1)^D`` that the bits/dim convention of
:mod:`gen_jax.distributions.bpd` needs (likelihood kind ``'exact'``): ``y = (level + u) / K`` with
``u ~ U[0, 1)^D`` is drawn inside ``loss`` and ``log_prob`` by
:func:`gen_jax.distributions.dequantize` (Theis et al. 2016, Sec. 3.1).

The model (:func:`build_image_flow`; ``cond`` is a batch-like dict with ``'label'`` for
class-conditional flows, one-hot encoded for the flow):

* ``training``: one loss, ``loss(params, batch, key) -> (mean bits/dim, {bpd, log_prior,
  log_det} each [B])``;
* ``likelihood.log_prob(params, batch, key) -> [B]`` nats (kind ``'exact'``);
* ``sampler.sample(params, key, num, cond=None, temperature=T) -> [num, H, W, C]``:
  ``eps ~ N(0, T^2 I)`` (Glow Sec. 5.4), ``y = f^{-1}(eps)``, quantized to the levels;
* ``codec``: ``encode(params, image, cond=None) -> eps [B, D]`` (of the bin centres
  ``y = (level + 1/2) / K``), ``decode(params, eps, cond=None) -> [B, H, W, C]`` (on the
  levels);
* ``conditioning``: ``label_conditioning(num_classes)`` for class-conditional flows.

Beside the model, :class:`ImageFlow` holds the raw bijection, ``forward(params, y,
cond=None) -> (eps, log-det)`` and ``inverse(params, eps, cond=None) -> (y, log-det)``;
:func:`interpolate` interpolates linearly between the latents of two images (Glow Sec. 5.4).

Inputs are checked: wrong image shapes and (outside ``jit``) non-finite values raise a
``ValueError`` naming the argument and shape.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.flows.bijector import Bijector, check_finite
from gen_jax.model import (Codec, DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch, condition_labels,
                           label_conditioning, loss_training)


def standard_normal_log_prob(eps: jax.Array) -> jax.Array:
    """``log N(eps; 0, I)`` summed over ``[B, D]`` -> ``[B]``."""
    return -0.5 * jnp.sum(jnp.square(eps) + dist.LOG_2PI, axis=-1)


class ImageFlow(NamedTuple):
    """An image flow: the model and its raw bijection.

    Attributes:
      model: the :class:`GenerativeModel` (module docstring).
      forward: ``(params, y [B, H, W, C], cond=None) -> (eps [B, D], log|det df/dy| [B])``
        on dequantized ``y``.
      inverse: ``(params, eps [B, D], cond=None) -> (y [B, H, W, C], log|det df^{-1}/deps| [B])``.
    """

    model: GenerativeModel
    forward: Callable
    inverse: Callable


def build_image_flow(*, name: str, flow: Bijector, image_shape, num_levels: int,
                     num_classes: int = 0, conditional: bool = False,
                     temperature: float = 1.0) -> ImageFlow:
    """The model of bijector ``flow`` and its raw bijection (see module docstring).

    Args:
      name: model name.
      flow: bijector ``[B, H, W, C]`` on ``[0, 1)`` -> ``[B, D]`` standard-normal latents.
      image_shape: ``(H, W, C)``.
      num_levels: ``K``.
      num_classes: classes of a class-conditional flow (the one-hot width of ``cond``).
      conditional: whether the flow takes ``cond``.
      temperature: default sampling temperature ``T``.
    """
    image_shape = tuple(int(s) for s in image_shape)
    k = int(num_levels)
    d = math.prod(image_shape)
    log_k = d * math.log(k)

    def check(x, where):
        check_image_batch(x, image_shape, where)
        check_finite(x, where)

    def one_hot(source, n, where) -> Optional[jax.Array]:
        if not conditional:
            return None
        return jax.nn.one_hot(condition_labels(source, n, where), num_classes, dtype=jnp.float32)

    def fwd(params, y, c):
        return flow.apply(params, y, c, method="forward")

    def inv(params, eps, c):
        return flow.apply(params, eps, c, method="inverse")

    def init(key, batch):
        x = batch["image"]
        check(x, "init batch['image']")
        k_deq, k_init = jax.random.split(key)
        y = dist.dequantize(k_deq, x, k)
        return flow.init(k_init, y, one_hot(batch, x.shape[0], "init batch"), method="forward")

    def terms(params, batch, key, where):
        x = batch["image"]
        check(x, f"{where} batch['image']")
        y = dist.dequantize(key, x, k)
        eps, log_det = fwd(params, y, one_hot(batch, x.shape[0], f"{where} batch"))
        log_prior = standard_normal_log_prob(eps)
        return log_prior + log_det, log_prior, log_det

    def log_prob(params, batch, key):
        return terms(params, batch, key, "log_prob")[0]

    def loss(params, batch, key):
        lp, log_prior, log_det = terms(params, batch, key, "loss")
        bpd = (-lp + log_k) / (d * math.log(2.0))  # [B], gen_jax.distributions.bpd convention
        return jnp.mean(bpd), {"bpd": bpd, "log_prior": log_prior, "log_det": log_det}

    def sample(params, key, num, cond=None, temperature=temperature):
        eps = temperature * jax.random.normal(key, (num, d), jnp.float32)
        y, _ = inv(params, eps, one_hot(cond, num, "sample"))
        return dist.quantize(y, k)

    def encode(params, image, cond=None):
        check(image, "encode image")
        y = (dist.to_levels(image, k).astype(jnp.float32) + 0.5) / k
        return fwd(params, y, one_hot(cond, image.shape[0], "encode"))[0]

    def decode(params, eps, cond=None):
        if eps.ndim != 2 or eps.shape[1] != d:
            raise ValueError(f"decode: latents must be [B, {d}], got shape {eps.shape}")
        check_finite(eps, "decode latents")
        return dist.quantize(inv(params, eps, one_hot(cond, eps.shape[0], "decode"))[0], k)

    def forward(params, y, cond=None):
        check(y, "forward y")
        return fwd(params, y, one_hot(cond, y.shape[0], "forward"))

    def inverse(params, eps, cond=None):
        return inv(params, eps, one_hot(cond, eps.shape[0], "inverse"))

    model = GenerativeModel(
        name=name, family="flow", training=loss_training(init, loss), sampler=Sampler(sample, "image"),
        likelihood=Likelihood(log_prob, "exact"), codec=Codec(encode, decode),
        conditioning=label_conditioning(num_classes) if conditional else None,
        data=DataSpec(image_shape, k, num_classes if conditional else 0))
    return ImageFlow(model=model, forward=forward, inverse=inverse)


def interpolate(model: GenerativeModel, params, image_a: jax.Array, image_b: jax.Array, num: int,
                cond: Optional[dict] = None) -> jax.Array:
    """Images ``[B, num, H, W, C]`` decoded along ``(1 - t) eps_a + t eps_b``, ``t`` in
    ``linspace(0, 1, num)``, between the latents of ``image_a`` and ``image_b`` ``[B, H, W, C]``
    (``model.codec``; Glow Sec. 5.4). A class-conditional flow decodes each row with the
    label of its pair (``cond={'label': [B]}``)."""
    za, zb = model.codec.encode(params, image_a, cond), model.codec.encode(params, image_b, cond)
    if za.shape != zb.shape:
        raise ValueError(f"interpolate: image_a and image_b differ in shape: {image_a.shape} vs {image_b.shape}")
    b, d = za.shape
    t = jnp.linspace(0.0, 1.0, num)[None, :, None]
    z = ((1.0 - t) * za[:, None] + t * zb[:, None]).reshape(b * num, d)
    c = None if cond is None else {"label": jnp.repeat(jnp.asarray(cond["label"]), num)}
    return model.codec.decode(params, z, c).reshape((b, num) + tuple(image_a.shape[1:]))
