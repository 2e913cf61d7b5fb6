"""GAN generators and discriminators: MLPs for 2-D data, DCGAN for images, with class
conditioning (conditional batch norm, projection, auxiliary classifier) and spectral norm.

Conventions: noise ``z [B, Z]``; labels int ``[B]`` in ``[0, num_classes)`` (their *values*
are checked by the model, not here: they cannot be under ``jit``); images float32
``[B, H, W, C]`` in ``[0, 1]`` (the repo's image convention); discriminator logits ``[B]``.

Variables (what ``init`` / ``apply`` need):

* ``init(rngs, ...)`` needs only a ``'params'`` key (spectral norm draws its ``u`` from it).
* ``'batch_stats'`` (batch-norm running averages) exists for :class:`DCGANGenerator` and for
  :class:`DCGANDiscriminator` with ``norm='batch'``; ``train=True`` normalizes with batch
  statistics and updates it, so ``apply(..., train=True, mutable=['batch_stats'])``;
  ``train=False`` uses the running averages and changes nothing.
* ``'spectral'`` (:data:`gen_jax.nn.spectral_norm.SPECTRAL`, the power-iteration vectors)
  exists with ``spectral=True``; ``train=True`` advances the power iteration, so it must be
  mutable too (``mutable=['batch_stats', 'spectral']``, whichever exist).
* No dropout: ``apply`` needs no rngs.
* :class:`DCGANDiscriminator` sows its pooled features ``phi [B, F]`` into
  ``'intermediates'`` (``mutable=['intermediates']`` to read them, e.g. for feature matching).

Architectures:

* :class:`MLPGenerator` / :class:`MLPDiscriminator`: ReLU / LeakyReLU(0.2) MLPs.
* :class:`DCGANGenerator` (Radford et al. 2016, Sec. 3.1 guidelines: transposed strided convs,
  batch norm in every layer but the output, ReLU, tanh output): ``Dense -> reshape to
  (H/2^n, W/2^n, base 2^(n-1))`` then ``n`` stride-2 4x4 'SAME' transposed convs halving the
  channels, the last to ``C`` channels, ``(tanh + 1) / 2``. ``n`` is :func:`dcgan_upsamplings`
  (2 for 8x8 digits: 2x2 -> 8x8; 3 for 32x32: 4x4 -> 32x32). With ``num_classes > 0`` every
  batch norm is a :class:`~gen_jax.nn.conditional_norm.ConditionalBatchNorm` on the label
  (Miyato & Koyama 2018, Sec. 4). Layers followed by a norm have no bias (the norm's shift
  replaces it). Weights ~ N(0, 0.02) (Radford et al. 2016, Sec. 4).
* :class:`DCGANDiscriminator`: ``n`` stride-2 4x4 'SAME' convs with ``base 2^i`` channels
  (same ``n`` rule on the input's H, W), LeakyReLU(0.2), no norm on the first layer, then the
  chosen norm; ``phi(x) = sum over H, W`` ``[B, F]``; logits ``psi(phi) = Dense(1)``, plus the
  projection ``<embed(y), phi(x)>`` (Miyato & Koyama 2018, Eq. 3) and/or AC-GAN class logits
  ``Dense(num_classes)(phi)`` (Odena et al. 2017, Sec. 3).

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the hidden dense, conv
and transposed-conv layers compute in ``dtype`` (params float32; spectral norm's power
iteration on the float32 kernels); batch/layer norms compute their statistics in float32 and
return float32; the output layers (the generator's last layer, the discriminator's logits,
projection and class logits) are float32 layers, and the pooled features ``phi`` are summed in
float32, so what a loss reads is float32.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.conditional_norm import ConditionalBatchNorm
from gen_jax.nn.spectral_norm import sn_conv, sn_dense

NORMS = ("none", "batch", "layer")
_BN_MOMENTUM, _BN_EPS = 0.9, 1e-5
_DCGAN_INIT = nn.initializers.normal(0.02)


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct`` s from
    ``jax.eval_shape``); pass ``variables['params']`` to count the trained parameters."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def dcgan_upsamplings(image_shape: Sequence[int], name: str = "image_shape") -> int:
    """The number ``n`` of stride-2 layers of the DCGAN networks for ``(H, W, C)``:
    ``n = max(2, floor(log2(min(H, W))) - 2)`` (8x8 -> 2, from 2x2; 16x16 and 28x28 -> 2;
    32x32 -> 3, from 4x4; 64x64 -> 4). ``ValueError`` naming ``name`` unless ``H`` and ``W``
    are divisible by ``2^n``."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be (H, W, C) of positive sizes, got {shape}")
    h, w, _ = shape
    n = max(2, int(math.floor(math.log2(min(h, w)))) - 2)
    if h % 2 ** n or w % 2 ** n:
        raise ValueError(f"{name} {shape}: H and W must be divisible by 2^{n} = {2 ** n} "
                         f"(the DCGAN networks use {n} stride-2 layers at this size)")
    return n


def _check_2d(v: jax.Array, what: str, who: str) -> None:
    if v.ndim != 2:
        raise ValueError(f"{who}: {what} must be [B, D], got shape {v.shape}")


def _check_label(label: Optional[jax.Array], needed: bool, batch: int, who: str, why: str) -> None:
    if not needed:
        if label is not None:
            raise ValueError(f"{who}: label given but {why}; pass label=None")
        return
    if label is None:
        raise ValueError(f"{who}: label int [B] is required ({why})")
    shape, dtype = jnp.shape(label), jnp.result_type(label)
    if shape != (batch,) or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{who}: label must be int [B] = [{batch}], got {dtype} {shape}")


class MLPGenerator(nn.Module):
    """``z [B, Z] -> x [B, out_dim]``: ReLU MLP with a linear output (2-D toy data).

    ``__call__(z, label=None, train=True)``; ``label`` must be None (unconditional) and
    ``train`` is accepted for a uniform generator interface (no norm, no state).
    """

    hidden: Sequence[int] = (128, 128)
    out_dim: int = 2
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, z: jax.Array, label: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        _check_2d(z, "z", "MLPGenerator")
        _check_label(label, False, z.shape[0], "MLPGenerator", "it is unconditional")
        h = z
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(h))
        return nn.Dense(self.out_dim, name="out")(h)


class MLPDiscriminator(nn.Module):
    """``x [B, D] -> logits [B]``: LeakyReLU(0.2) MLP, linear output.

    ``spectral=True`` normalizes every Dense (Miyato et al. 2018); ``train=True`` then
    advances the power iteration (``mutable=['spectral']``).
    """

    hidden: Sequence[int] = (128, 128)
    spectral: bool = False
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (gen_jax.nn.precision)

    def _dense(self, features: int, name: str, train: bool, dtype=None):
        if self.spectral:
            layer = sn_dense(features, name=name, dtype=dtype)
            return lambda h: layer(h, train)
        return nn.Dense(features, dtype=dtype, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        _check_2d(x, "x", "MLPDiscriminator")
        h = x
        for i, width in enumerate(self.hidden):
            h = nn.leaky_relu(self._dense(width, f"dense_{i}", train, self.dtype)(h), 0.2)
        return self._dense(1, "out", train)(h)[:, 0]


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016): ``z [B, Z] -> images [B, H, W, C]`` in ``[0, 1]``.

    ``__call__(z, label=None, train=True)``: ``label`` int ``[B]`` is required iff
    ``num_classes > 0`` (conditional batch norm). ``train=True`` normalizes with batch
    statistics and updates ``'batch_stats'`` (``mutable=['batch_stats']``).
    """

    image_shape: Sequence[int] = (32, 32, 3)
    base: int = 64
    num_classes: int = 0
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (gen_jax.nn.precision)

    def __post_init__(self):
        dcgan_upsamplings(self.image_shape, "DCGANGenerator image_shape")
        if self.base < 1 or self.num_classes < 0:
            raise ValueError(f"DCGANGenerator: base must be >= 1 and num_classes >= 0, "
                             f"got base={self.base}, num_classes={self.num_classes}")
        super().__post_init__()

    def _norm(self, h, label, train, name):
        if self.num_classes > 0:
            return ConditionalBatchNorm(self.num_classes, _BN_MOMENTUM, _BN_EPS, name=name)(h, label, train)
        return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)(h)

    @nn.compact
    def __call__(self, z: jax.Array, label: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        _check_2d(z, "z", "DCGANGenerator")
        _check_label(label, self.num_classes > 0, z.shape[0], "DCGANGenerator",
                     f"num_classes={self.num_classes}")
        h_img, w_img, c_img = (int(s) for s in self.image_shape)
        n = dcgan_upsamplings(self.image_shape)
        ch = self.base * 2 ** (n - 1)
        h = nn.Dense(h_img // 2 ** n * (w_img // 2 ** n) * ch, use_bias=False, kernel_init=_DCGAN_INIT,
                     dtype=self.dtype, name="project")(z)
        h = h.reshape(z.shape[0], h_img // 2 ** n, w_img // 2 ** n, ch)
        h = nn.relu(self._norm(h, label, train, "norm_0"))
        for i in range(1, n + 1):
            last = i == n
            ch = c_img if last else self.base * 2 ** (n - 1 - i)
            h = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME", use_bias=last,
                                 kernel_init=_DCGAN_INIT, dtype=None if last else self.dtype,
                                 name=f"deconv_{i}")(h)
            if not last:
                h = nn.relu(self._norm(h, label, train, f"norm_{i}"))
        return (jnp.tanh(h) + 1.0) / 2.0


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator / critic: ``x [B, H, W, C] -> logits [B]`` (or
    ``(logits [B], class_logits [B, num_classes])`` with ``aux_classifier=True``).

    Attributes:
      base: channels of the first conv; layer ``i`` has ``base 2^i``.
      num_classes: number of classes (``> 0`` for the projection or the auxiliary classifier).
      norm: ``'none'`` (what a gradient-penalty critic must use), ``'batch'`` (BatchNorm, state
        in ``'batch_stats'``) or ``'layer'`` (LayerNorm over H, W, C per example, per-channel
        affine; compatible with a penalty); never on the first layer.
      spectral: spectrally normalize every conv and dense (not the projection embedding).
      projection: with ``num_classes > 0``, add ``<embed(y), phi(x)>`` (Miyato & Koyama 2018,
        Eq. 3); then ``label`` int ``[B]`` is required, otherwise it must be None.
      aux_classifier: also return AC-GAN class logits ``Dense(num_classes)(phi)`` (Odena et
        al. 2017); needs ``num_classes > 0``.

    ``__call__(x, label=None, train=True)``; ``train`` selects batch vs running statistics
    and whether spectral norm advances its power iteration (see the module docstring for the
    mutable collections). The pooled features ``phi [B, F]`` are sown as
    ``intermediates/phi``.
    """

    base: int = 64
    num_classes: int = 0
    norm: str = "none"
    spectral: bool = False
    projection: bool = True
    aux_classifier: bool = False
    dtype: Optional[Any] = None  # compute dtype of the convs (gen_jax.nn.precision); heads float32

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"DCGANDiscriminator: norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.base < 1 or self.num_classes < 0:
            raise ValueError(f"DCGANDiscriminator: base must be >= 1 and num_classes >= 0, "
                             f"got base={self.base}, num_classes={self.num_classes}")
        if self.aux_classifier and self.num_classes < 1:
            raise ValueError("DCGANDiscriminator: aux_classifier=True needs num_classes >= 1, "
                             f"got {self.num_classes}")
        super().__post_init__()

    @property
    def uses_batch_norm(self) -> bool:
        """True iff ``norm == 'batch'`` (a gradient penalty is then ill-defined: the critic's
        output for one example depends on the rest of the batch)."""
        return self.norm == "batch"

    @property
    def uses_projection(self) -> bool:
        """True iff the logits include the projection term (and ``label`` is required)."""
        return self.num_classes > 0 and self.projection

    def _layer(self, kind: str, features: int, name: str, train: bool):
        if kind == "conv":
            if self.spectral:
                layer = sn_conv(features, (4, 4), 2, name=name, kernel_init=_DCGAN_INIT, dtype=self.dtype)
                return lambda h: layer(h, train)
            return nn.Conv(features, (4, 4), strides=2, padding="SAME", kernel_init=_DCGAN_INIT, dtype=self.dtype,
                           name=name)
        if self.spectral:
            layer = sn_dense(features, name=name, kernel_init=_DCGAN_INIT)
            return lambda h: layer(h, train)
        return nn.Dense(features, kernel_init=_DCGAN_INIT, name=name)

    def _norm(self, h, train, name):
        if self.norm == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)(h)
        if self.norm == "layer":
            return nn.LayerNorm(epsilon=_BN_EPS, reduction_axes=(1, 2, 3), feature_axes=-1, name=name)(h)
        return h

    @nn.compact
    def __call__(self, x: jax.Array, label: Optional[jax.Array] = None, train: bool = True):
        if x.ndim != 4:
            raise ValueError(f"DCGANDiscriminator: x must be [B, H, W, C], got shape {x.shape}")
        _check_label(label, self.uses_projection, x.shape[0], "DCGANDiscriminator",
                     f"num_classes={self.num_classes}, projection={self.projection}")
        n = dcgan_upsamplings(x.shape[1:], "DCGANDiscriminator x [B, H, W, C] image shape")
        h = x
        for i in range(n):
            h = self._layer("conv", self.base * 2 ** i, f"conv_{i}", train)(h)
            if i > 0:
                h = self._norm(h, train, f"norm_{i}")
            h = nn.leaky_relu(h, 0.2)
        phi = h.astype(jnp.float32).sum(axis=(1, 2))  # [B, F], summed in float32
        self.sow("intermediates", "phi", phi)
        logits = self._layer("dense", 1, "psi", train)(phi)[:, 0]
        if self.uses_projection:
            emb = nn.Embed(self.num_classes, phi.shape[-1], embedding_init=nn.initializers.xavier_uniform(),
                           name="embed")(label)
            logits = logits + jnp.sum(emb * phi, axis=-1)
        if self.aux_classifier:
            return logits, self._layer("dense", self.num_classes, "classifier", train)(phi)
        return logits
