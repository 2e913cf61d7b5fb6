"""The bijector interface: pure ``forward`` / ``inverse`` maps with per-example log-dets.

A bijector is a Flax linen module with two methods, called through
``module.apply(params, x, cond, method='forward' | 'inverse')``:

* ``forward(x, cond=None) -> (y, log|det dy/dx|)``: the *normalizing* direction
  (data -> latent, ``z = f(x)`` of Dinh et al. 2017, Eq. 3 and Kingma & Dhariwal 2018,
  Eq. 1), used for the density ``log p(x) = log p_Z(f(x)) + log|det df/dx|``;
* ``inverse(y, cond=None) -> (x, log|det dx/dy|)``: the generative direction, with
  ``log|det dx/dy| = -log|det dy/dx|`` at corresponding points.

Both act on a batch ``[B, ...]`` at once and return the log-det as ``[B]``: every bijector
computes it in closed form from its structure (diagonal, triangular or ``C x C`` factors),
never from a dense Jacobian and never with a per-example Python loop. ``cond`` is an
optional conditioning array ``[B, E]`` (conditional flows); bijectors that do not use it
ignore it. Params are the plain pytree ``module.init(key, x, cond, method='forward')``
returns; initializing through ``forward`` on a data batch runs the data-dependent inits
(ActNorm) on the activations that actually reach each layer.

:class:`Chain` composes (``f = f_n o ... o f_1``: log-dets add), :class:`Invert` swaps the
two directions (Papamakarios et al. 2017, Sec. 3.2: IAF is the inverse of MAF).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sum_except_batch(a: jax.Array) -> jax.Array:
    """``[B, ...] -> [B]``: sum over every axis but the first."""
    return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def batch_zeros(x: jax.Array) -> jax.Array:
    """A zero log-det ``[B]`` for the batch ``x``."""
    return jnp.zeros((x.shape[0],), jnp.result_type(x, jnp.float32))


def check_finite(x, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` and the shape if a *concrete* ``x`` holds NaN or
    inf. Under ``jit`` (a tracer) this is a no-op: the train loop's finiteness guard takes over."""
    if isinstance(x, jax.core.Tracer):
        return
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} non-finite value(s) (NaN/inf) in an input "
                         f"of shape {a.shape}")


class Bijector(nn.Module):
    """Base class: subclasses define ``forward`` and ``inverse`` (see module docstring).

    ``__call__`` is ``forward`` so a bijector can be used as an ordinary module.
    """

    def forward(self, x: jax.Array, cond: Optional[jax.Array] = None):
        raise NotImplementedError

    def inverse(self, y: jax.Array, cond: Optional[jax.Array] = None):
        raise NotImplementedError

    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None):
        return self.forward(x, cond)


class Chain(Bijector):
    """Composition ``f = f_n o ... o f_1`` of ``bijectors = (f_1, ..., f_n)``.

    ``log|det df/dx| = sum_k log|det df_k/dh_{k-1}|`` (chain rule; Dinh et al. 2017, Sec. 3.5);
    ``inverse`` applies ``f_n^-1`` first.
    """

    bijectors: Sequence[Bijector]

    def forward(self, x, cond=None):
        ldj = batch_zeros(x)
        for b in self.bijectors:
            x, l = b.forward(x, cond)
            ldj = ldj + l
        return x, ldj

    def inverse(self, y, cond=None):
        ldj = batch_zeros(y)
        for b in reversed(tuple(self.bijectors)):
            y, l = b.inverse(y, cond)
            ldj = ldj + l
        return y, ldj


class Invert(Bijector):
    """The inverse bijector: ``forward = bijector.inverse``, ``inverse = bijector.forward``.

    Its params are the wrapped bijector's (initialize it through ``forward``, i.e. through
    the wrapped ``inverse``, only if that direction can initialize; data-dependent layers
    initialize from whatever input their own ``forward`` sees).
    """

    bijector: Bijector

    def forward(self, x, cond=None):
        return self.bijector.inverse(x, cond)

    def inverse(self, y, cond=None):
        return self.bijector.forward(y, cond)
