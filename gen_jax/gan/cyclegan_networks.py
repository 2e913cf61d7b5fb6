"""The CycleGAN ResNet generator (Zhu et al. 2017, Appendix 7.2; Johnson et al. 2016), scaled to
small images.

:class:`ResnetGenerator` maps images ``[B, H, W, C]`` in ``[0, 1]`` to images of the same shape
in ``[0, 1]`` (inside it works on ``2 x - 1``, with a ``tanh`` output mapped back by
``(t + 1) / 2``). In the paper's notation, with ``k = base``::

    c7s1-k, d2k, d4k, R4k x num_res, u2k, uk, c7s1-C

* ``c7s1-k``: reflection padding 3, 7x7 conv with ``k`` filters, stride 1, instance norm, ReLU;
* ``dk``: 3x3 conv with ``k`` filters, stride 2 (padding 1), instance norm, ReLU (H -> H/2);
* ``Rk``: a residual block of two 3x3 convs with ``k`` filters (reflection padding 1, instance
  norm, ReLU after the first only), added to its input;
* ``uk``: 3x3 fractionally strided (transposed) conv with ``k`` filters, stride 2, instance
  norm, ReLU (H -> 2H); ``upsample='resize'`` replaces the transposed conv by a nearest 2x
  resize and a 3x3 conv (Odena et al. 2016: no checkerboard artifacts; about 3x faster than
  XLA's CPU transposed conv here);
* the last ``c7s1-C`` has no norm and a ``tanh``.

The paper uses ``k = 64`` and 6 blocks at 128x128 (9 at 256x256); at 32x32 the two stride-2
layers leave 8x8 maps where the residual blocks act, which cover a shapes image's objects (radius
<= 8 px) with their receptive field. Instance norm (Ulyanov et al. 2016) has no learned scale or
bias (as in the authors' implementation) and no running statistics: the network is the same
function in training and evaluation, and one image's output does not depend on the others of its
batch. Weights ~ N(0, 0.02) (the authors' initialization); convs followed by a norm have no bias.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

UPSAMPLES = ("transpose", "resize")
_INIT = nn.initializers.normal(0.02)
_EPS = 1e-5


def _check_image(x: jax.Array, who: str) -> None:
    if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError(f"{who}: x must be [B, H, W, C] with H and W divisible by 4 (two stride-2 "
                         f"layers), got shape {x.shape}")


def instance_norm(h: jax.Array) -> jax.Array:
    """Normalizes every channel of every example over its ``H, W`` (Ulyanov et al. 2016), no affine."""
    mu = jnp.mean(h, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(h - mu), axis=(1, 2), keepdims=True)
    return (h - mu) * jax.lax.rsqrt(var + _EPS)


def _reflect(h: jax.Array, p: int) -> jax.Array:
    return jnp.pad(h, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class _ResBlock(nn.Module):
    """``Rk``: ``x + IN(conv3(relu(IN(conv3(x)))))`` with reflection padding."""

    features: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.features, (3, 3), padding="VALID", use_bias=False, kernel_init=_INIT)(_reflect(x, 1))
        h = nn.relu(instance_norm(h))
        h = nn.Conv(self.features, (3, 3), padding="VALID", use_bias=False, kernel_init=_INIT)(_reflect(h, 1))
        return x + instance_norm(h)


class ResnetGenerator(nn.Module):
    """``[B, H, W, C]`` in [0, 1] -> ``[B, H, W, C]`` in [0, 1] (module docstring; ``H, W``
    divisible by 4).

    Attributes:
      base: ``k``, the filters of the first layer (the blocks have ``4 k``).
      num_res: residual blocks at ``H/4 x W/4``.
      upsample: ``'transpose'`` (the paper's ``uk``) or ``'resize'`` (module docstring).
    """

    base: int = 32
    num_res: int = 6
    upsample: str = "transpose"

    def __post_init__(self):
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"ResnetGenerator: upsample must be one of {list(UPSAMPLES)}, got {self.upsample!r}")
        super().__post_init__()

    def _up(self, h, features: int):
        if self.upsample == "transpose":
            return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME", use_bias=False,
                                    kernel_init=_INIT)(h)
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
        return nn.Conv(features, (3, 3), padding="VALID", use_bias=False, kernel_init=_INIT)(_reflect(h, 1))

    @nn.compact
    def __call__(self, x):
        _check_image(x, "ResnetGenerator")
        k, c = self.base, x.shape[-1]
        conv = lambda f, kern, **kw: nn.Conv(f, (kern, kern), use_bias=False, kernel_init=_INIT, **kw)
        h = nn.relu(instance_norm(conv(k, 7, padding="VALID")(_reflect(2.0 * x - 1.0, 3))))
        for f in (2 * k, 4 * k):
            h = nn.relu(instance_norm(conv(f, 3, strides=(2, 2), padding=((1, 1), (1, 1)))(h)))
        for _ in range(self.num_res):
            h = _ResBlock(4 * k)(h)
        for f in (2 * k, k):
            h = nn.relu(instance_norm(self._up(h, f)))
        h = nn.Conv(c, (7, 7), padding="VALID", kernel_init=_INIT)(_reflect(h, 3))
        return ((jnp.tanh(h) + 1.0) * 0.5).astype(jnp.float32)

