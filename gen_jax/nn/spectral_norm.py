"""Spectrally normalized Dense and Conv layers (Miyato et al. 2018, "Spectral Normalization
for Generative Adversarial Networks", Sec. 2.1 and Alg. 1).

A layer's kernel ``W`` is reshaped to the matrix ``W_mat [prod(kernel dims except out), out]``
(a Dense kernel ``[in, out]`` as is; a conv kernel ``[kh, kw, in, out]`` as ``[kh kw in, out]``)
and replaced by ``W / sigma(W)`` (Eq. 8), with the largest singular value ``sigma(W)``
estimated by power iteration (Alg. 1) from a persistent vector ``u [1, out]``::

    v     = normalize(u W_mat^T)               # [1, in']
    u'    = normalize(v W_mat)                 # [1, out]
    sigma = v W_mat u'^T                       # the estimate u'^T W_mat^T v^T of Eq. 8
    W_SN  = W / sigma

(``u`` and ``v`` are treated as constants in the gradient, as in the paper's code.) One
power-iteration step per call (``n_steps=1``, as in Alg. 1): the estimate improves over
training because ``u`` persists between steps.

This is ``flax.linen.SpectralNorm`` wrapped around ``nn.Dense`` / ``nn.Conv``, with its
vectors in their own collection :data:`SPECTRAL` ``= 'spectral'`` (``u`` and the last
``sigma`` of each kernel; never in ``'params'``, never trained):

* ``update_stats=True`` (training): the iterated ``u'`` and ``sigma`` are written back, so
  ``apply`` needs ``mutable=['spectral']`` (plus any other mutable collection, e.g.
  ``'batch_stats'``) and returns the updated collection, which the caller keeps.
* ``update_stats=False`` (evaluation): the same step is computed from the stored ``u`` but
  nothing is written; the output is a deterministic function of ``params`` and ``spectral``.

``init`` needs a ``'params'`` PRNG key (``u`` is drawn from a standard normal). Biases (1-D)
are not normalized.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the power iteration
and ``W / sigma`` run on the float32 kernel and ``u``; only the layer's product casts its
input and the normalized kernel to ``dtype``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax

SPECTRAL = "spectral"

Initializer = Callable[..., jax.Array]


class SNDense(nn.Module):
    """A spectrally normalized ``nn.Dense``: ``x [..., in] -> [..., features]``.

    ``__call__(x, update_stats)``; ``update_stats=True`` in training (advances the power
    iteration: ``apply(..., mutable=['spectral'])``), ``False`` in evaluation. Variables:
    ``params/dense/{kernel, bias}`` and ``spectral/sn/{dense/kernel/u, dense/kernel/sigma}``.
    """

    features: int
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    n_steps: int = 1
    dtype: Optional[Any] = None  # compute dtype of the product; the power iteration stays float32

    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
        layer = nn.Dense(self.features, use_bias=self.use_bias, kernel_init=self.kernel_init,
                         bias_init=self.bias_init, dtype=self.dtype, name="dense")
        sn = nn.SpectralNorm(layer, n_steps=self.n_steps, collection_name=SPECTRAL, name="sn")
        return sn(x, update_stats=update_stats)


class SNConv(nn.Module):
    """A spectrally normalized ``nn.Conv``: ``x [B, H, W, in] -> [B, H', W', features]``.

    The kernel ``[kh, kw, in, features]`` is normalized as the matrix
    ``[kh kw in, features]`` (Miyato et al. 2018, Sec. 2.1 / App. C.1 reshape).
    ``__call__(x, update_stats)`` as :class:`SNDense`. Variables:
    ``params/conv/{kernel, bias}`` and ``spectral/sn/{conv/kernel/u, conv/kernel/sigma}``.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Union[int, Sequence[int]] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    n_steps: int = 1
    dtype: Optional[Any] = None  # compute dtype of the product; the power iteration stays float32

    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
        layer = nn.Conv(self.features, tuple(self.kernel_size), strides=self.strides,
                        padding=self.padding, use_bias=self.use_bias, kernel_init=self.kernel_init,
                        bias_init=self.bias_init, dtype=self.dtype, name="conv")
        sn = nn.SpectralNorm(layer, n_steps=self.n_steps, collection_name=SPECTRAL, name="sn")
        return sn(x, update_stats=update_stats)


def sn_dense(features: int, name: Optional[str] = None, **kw) -> SNDense:
    """:class:`SNDense` ``(features, **kw)`` (``kw``: ``use_bias``, ``kernel_init``,
    ``bias_init``, ``n_steps``, ``dtype``); call it as ``layer(x, update_stats)``."""
    return SNDense(features, name=name, **kw)


def sn_conv(features: int, kernel: Sequence[int], strides: Union[int, Sequence[int]],
            name: Optional[str] = None, **kw) -> SNConv:
    """:class:`SNConv` ``(features, kernel, strides, **kw)`` (``kw``: ``padding`` (default
    ``'SAME'``), ``use_bias``, ``kernel_init``, ``bias_init``, ``n_steps``, ``dtype``); call it as
    ``layer(x, update_stats)``."""
    return SNConv(features, tuple(kernel), strides, name=name, **kw)
