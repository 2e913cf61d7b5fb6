"""The "standard CNN" GAN of Miyato et al. 2018 (Table 3; CIFAR-10 / STL-10), generator and
discriminator with the calling conventions of :mod:`gen_jax.gan.networks`.

For ``M x M`` images (``M`` divisible by 8; ``m = M / 8``):

* generator: ``z [B, Z] -> Dense(m m 512) -> reshape (m, m, 512)`` (BN, ReLU), then three
  4x4 stride-2 transposed convs to 256, 128, 64 channels (each BN, ReLU), then a 3x3 stride-1
  conv to ``C`` channels and ``tanh`` (returned as ``(tanh + 1) / 2`` in ``[0, 1]``);
* discriminator: ``conv3x3 64, conv4x4/2 64, conv3x3 128, conv4x4/2 128, conv3x3 256,
  conv4x4/2 256, conv3x3 512`` with LeakyReLU(0.1), flattened, ``Dense(1)``; spectral
  normalization of every layer with ``spectral=True`` (SN-GAN; Miyato et al. 2018, Alg. 1).

Widths scale with ``width`` (512 at ``width=1``: the paper's). Variables as in
:mod:`gen_jax.gan.networks` (``'batch_stats'`` for the generator, ``'spectral'`` for a
spectrally normalized discriminator).

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): every layer but the
output ones (the generator's last conv, the discriminator's ``psi``) computes in ``dtype``
(params float32; batch-norm statistics and the spectral-norm power iteration float32).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.spectral_norm import sn_conv, sn_dense

_BN_MOMENTUM, _BN_EPS = 0.9, 1e-5
D_LAYERS = ((3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256), (3, 1, 512))


def _bottom(image_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] % 8 or shape[1] % 8 or min(shape) < 1:
        raise ValueError(f"{who}: image shape must be (H, W, C) with H and W divisible by 8, got {shape}")
    return shape[0] // 8, shape[1] // 8, shape[2]


class SNGANGenerator(nn.Module):
    """``(z [B, Z], label=None, train=True) -> images [B, H, W, C]`` in ``[0, 1]``
    (unconditional: ``label`` must be None)."""

    image_shape: Sequence[int] = (32, 32, 3)
    width: float = 1.0
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (gen_jax.nn.precision)

    def _bn(self, h, train, name):
        return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)(h)

    @nn.compact
    def __call__(self, z: jax.Array, label: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        if z.ndim != 2:
            raise ValueError(f"SNGANGenerator: z must be [B, Z], got shape {z.shape}")
        if label is not None:
            raise ValueError("SNGANGenerator: label given but the standard CNN is unconditional; pass label=None")
        m_h, m_w, c = _bottom(self.image_shape, "SNGANGenerator")
        ch = [max(1, int(round(w * self.width))) for w in (512, 256, 128, 64)]
        h = nn.Dense(m_h * m_w * ch[0], dtype=self.dtype, name="project")(z).reshape(z.shape[0], m_h, m_w, ch[0])
        h = nn.relu(self._bn(h, train, "norm_0"))
        for i, out in enumerate(ch[1:], start=1):
            h = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                                 name=f"deconv_{i}")(h)
            h = nn.relu(self._bn(h, train, f"norm_{i}"))
        h = nn.Conv(c, (3, 3), padding="SAME", name="out")(h)
        return (jnp.tanh(h) + 1.0) / 2.0


class SNGANDiscriminator(nn.Module):
    """``(x [B, H, W, C], label=None, train=True) -> logits [B]``; ``train`` advances the
    spectral-norm power iteration (``mutable=['spectral']``)."""

    width: float = 1.0
    spectral: bool = True
    dtype: Optional[Any] = None  # compute dtype of the convs (gen_jax.nn.precision); psi float32

    def _layer(self, kind, features, name, train, kernel=3, stride=1):
        dt = self.dtype if kind == "conv" else None  # the logit layer is float32
        if self.spectral:
            layer = (sn_conv(features, (kernel, kernel), stride, name=name, dtype=dt) if kind == "conv"
                     else sn_dense(features, name=name))
            return lambda h: layer(h, train)
        if kind == "conv":
            return nn.Conv(features, (kernel, kernel), strides=stride, padding="SAME", dtype=dt, name=name)
        return nn.Dense(features, name=name)

    @property
    def uses_batch_norm(self) -> bool:
        return False

    @property
    def uses_projection(self) -> bool:
        return False

    @property
    def aux_classifier(self) -> bool:
        return False

    @nn.compact
    def __call__(self, x: jax.Array, label: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"SNGANDiscriminator: x must be [B, H, W, C], got shape {x.shape}")
        if label is not None:
            raise ValueError("SNGANDiscriminator: label given but the standard CNN is unconditional; pass label=None")
        _bottom(x.shape[1:], "SNGANDiscriminator x")
        h = x
        for i, (k, s, f) in enumerate(D_LAYERS):
            h = nn.leaky_relu(self._layer("conv", max(1, int(round(f * self.width))), f"conv_{i}", train, k, s)(h), 0.1)
        return self._layer("dense", 1, "psi", train)(h.reshape(h.shape[0], -1))[:, 0]
