"""The PixelCNN++ network (Salimans, Karpathy, Chen & Kingma 2017, Secs. 2.3-2.5, Fig. 2).

Two causal streams over raster order (the vertical/horizontal stacks of van den Oord et al.
2016b, "Conditional Image Generation with PixelCNN Decoders", Sec. 2.2, which remove the
blind spot; PixelCNN++ implements them with shifted convolutions):

* ``u`` (the "up" stream): position ``(i, j)`` depends only on rows ``< i``; built from
  **down-shifted** convolutions (kernel ``[2, 3]``: pad one row on top and one column each
  side, so the kernel reads rows ``i-1, i`` and columns ``j-1..j+1``);
* ``ul`` (the "up-left" stream): ``(i, j)`` depends on rows ``< i`` and on ``(i, j' < j)``;
  built from **down-right-shifted** convolutions (kernel ``[2, 2]``: pad one row on top and
  one column on the left) plus ``u`` through 1x1 ("network in network") connections.

The first layer reads the image and shifts its output by one row (``u``) / one row or one
column (``ul``), which removes the current pixel; every later layer preserves the two
dependency sets, so the output at pixel ``i`` sees no channel of pixel ``i`` nor anything
after it (the channel coupling of a pixel lives in the likelihood, see
:mod:`gen_jax.distributions.logistic_mixture`).

Gated ResNet block (the "gated ResNet blocks" of Fig. 2, in the form of the paper's code;
the gate is van den Oord et al. 2016b's Eq. 2 without its tanh), on a stream ``x`` with auxiliary input
``a`` (the other stream and/or the short-cut from the up pass) and optional class label ``y``:

    c1 = conv(concat_elu(x)) [+ nin(concat_elu(a))]
    c2 = conv(dropout(concat_elu(c1)))  [+ embed(y)]           (2F channels)
    out = x + c2[:F] * sigmoid(c2[F:]),          concat_elu(v) = elu([v, -v])

U-Net-like multi-resolution structure: an up pass of ``num_stages`` stages of ``nr_resnet``
blocks per stream, separated by stride-2 shifted convolutions (downsampling instead of
dilation, Sec. 2.3), then a down pass with stride-2 shifted transposed convolutions
(upsampling) and ``nr_resnet`` (lowest resolution) / ``nr_resnet + 1`` (the others) blocks
per stage, each taking the matching up-pass activation as short-cut ``a`` (``u`` gets the
``u`` short-cut, ``ul`` gets ``[u, ul short-cut]``; short-cut connections, Sec. 2.4 and
Fig. 2). Dropout on the blocks' inner activations regularizes (Sec. 2.5). The output is
``nin(elu(ul))``, ``P`` raw mixture parameters per pixel.

Layers are weight-normalized (Salimans & Kingma 2016, Eq. 2: ``w = g v / ||v||``), as in the
paper's code. Deviation: ``g`` starts at ``init_scale`` (1, and 0.1 for the second conv of a
block, as in the code) instead of the data-dependent initialization, so ``init`` needs no
data pass. Inputs are scaled to ``[-1, 1]`` and a constant channel of ones is appended
(so the zero padding is distinguishable from black pixels).

Shapes: ``x`` ``[B, H, W, C]`` in ``[-1, 1]``, ``label`` int ``[B]`` -> ``[B, H, W, P]``;
``H`` and ``W`` must be divisible by ``2^(num_stages - 1)``.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): every convolution of
the streams casts its input and its (float32, weight-normalized in float32) kernel to
``dtype``; biases are added in float32, so both streams, the gates and the residual sums are
float32; the output ``nin`` (the mixture parameters) is a float32 layer, so the logistic
mixture likelihood reads float32. ``remat`` wraps each :class:`GatedResnet` in
``flax.linen.remat`` (:mod:`gen_jax.nn.remat`).
"""
from __future__ import annotations

import itertools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.remat import remat_block

SHIFTS = ("down", "down_right")


def concat_elu(x: jax.Array) -> jax.Array:
    """``elu([x, -x])`` on the channel axis (the non-linearity of the PixelCNN++ code): ``[..., 2F]``."""
    return jax.nn.elu(jnp.concatenate([x, -x], axis=-1))


def down_shift(x: jax.Array) -> jax.Array:
    """``[B, H, W, F]`` shifted down by one row (zero row on top, last row dropped)."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: jax.Array) -> jax.Array:
    """``[B, H, W, F]`` shifted right by one column (zero column on the left)."""
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def check_image_size(image_shape: Sequence[int], num_stages: int, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` unless ``H, W`` are divisible by
    ``2^(num_stages - 1)`` (the stride-2 down/up-sampling must invert exactly)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    f = 2 ** (num_stages - 1)
    if h % f or w % f:
        raise ValueError(f"{where}: {num_stages} stages downsample by {f}, so H and W must be divisible by "
                         f"{f}; got image shape {tuple(image_shape)}")


def _weight(module: nn.Module, shape, init_scale: float, weight_norm: bool) -> jax.Array:
    """Kernel ``shape = [..., in, out]``; weight-normalized ``g v / ||v||`` (norm over all but
    the output axis, Salimans & Kingma 2016, Eq. 2) or a plain LeCun-normal kernel."""
    if not weight_norm:
        return module.param("kernel", nn.initializers.variance_scaling(init_scale ** 2, "fan_in", "normal"),
                            shape)
    v = module.param("v", nn.initializers.normal(0.05), shape)
    g = module.param("g", nn.initializers.constant(init_scale), (shape[-1],))
    return normalized_weight(v, g)


def normalized_weight(v: jax.Array, g: jax.Array) -> jax.Array:
    """``w = g v / ||v||`` (Salimans & Kingma 2016, Eq. 2), the norm over all but the output axis."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1))))
    return v * (g / norm)


def _cast(x: jax.Array, w: jax.Array, dtype):
    """``(x, w)`` in the compute ``dtype`` (unchanged for ``None``)."""
    return (x, w) if dtype is None else (x.astype(dtype), w.astype(dtype))


def layer_weight(p: dict) -> jax.Array:
    """The kernel of a layer's params: ``normalized_weight(v, g)`` or the plain ``kernel``."""
    return normalized_weight(p["v"], p["g"]) if "v" in p else p["kernel"]


class ShiftedConv(nn.Module):
    """A causal (down- or down-right-shifted) convolution, optionally strided.

    ``shift='down'``: pad ``fh - 1`` rows on top and ``(fw - 1) / 2`` columns on each side;
    ``shift='down_right'``: pad ``fh - 1`` rows on top and ``fw - 1`` columns on the left.
    A ``[1, 1]`` kernel is the 1x1 "nin" layer. ``[B, H, W, I] -> [B, H/s, W/s, features]``.
    """

    features: int
    kernel: tuple = (2, 3)
    shift: str = "down"
    stride: int = 1
    init_scale: float = 1.0
    weight_norm: bool = True
    dtype: Optional[Any] = None  # compute dtype of the convolution (None: float32)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fh, fw = self.kernel
        if self.shift == "down":
            pad = ((fh - 1, 0), ((fw - 1) // 2, (fw - 1) // 2))
        elif self.shift == "down_right":
            pad = ((fh - 1, 0), (fw - 1, 0))
        else:
            raise ValueError(f"ShiftedConv.shift must be one of {SHIFTS}, got {self.shift!r}")
        x = jnp.pad(x, ((0, 0),) + pad + ((0, 0),))
        w = _weight(self, (fh, fw, x.shape[-1], self.features), self.init_scale, self.weight_norm)
        x, w = _cast(x, w, self.dtype)
        y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.param("b", nn.initializers.zeros, (self.features,))  # float32 bias: float32 out


class ShiftedConvTranspose(nn.Module):
    """Stride-2 causal upsampling ``[B, H, W, I] -> [B, 2H, 2W, features]``.

    A transposed convolution sends low-resolution ``(p, q)`` to rows ``2p .. 2p + fh - 1`` and
    columns ``2q .. 2q + fw - 1``; keeping the first ``2H`` rows (and for ``shift='down'``
    the columns ``(fw - 1) / 2 ..``, centring the ``[2, 3]`` kernel) makes high-resolution row
    ``r`` read only low-resolution row ``floor(r / 2)``, which saw rows ``< 2 floor(r / 2) <= r``.
    """

    features: int
    kernel: tuple = (2, 3)
    shift: str = "down"
    weight_norm: bool = True
    dtype: Optional[Any] = None  # compute dtype of the transposed convolution (None: float32)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w_, _ = x.shape
        fh, fw = self.kernel
        w = _weight(self, (fh, fw, x.shape[-1], self.features), 1.0, self.weight_norm)
        x, w = _cast(x, w, self.dtype)
        y = jax.lax.conv_transpose(x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        # y: [B, 2H + fh - 2, 2W + fw - 2, F]
        left = (fw - 1) // 2 if self.shift == "down" else 0
        y = y[:, :2 * h, left:left + 2 * w_]
        return y + self.param("b", nn.initializers.zeros, (self.features,))


class GatedResnet(nn.Module):
    """Gated ResNet block (Salimans et al. 2017, Fig. 2, code form; dropout Sec. 2.5; see the
    module docstring for the equations).

    ``x`` ``[B, H, W, F]``, ``a`` ``[B, H, W, A]`` or ``None``, ``label`` int ``[B]`` or
    ``None`` -> ``[B, H, W, F]``.
    """

    shift: str
    dropout: float
    num_classes: int = 0
    weight_norm: bool = True
    dtype: Optional[Any] = None  # compute dtype of the convolutions (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, x, a=None, label=None, train: bool = False):
        f = x.shape[-1]
        kernel = (2, 3) if self.shift == "down" else (2, 2)
        conv = lambda n, name, scale=1.0: ShiftedConv(n, kernel, self.shift, init_scale=scale,
                                                      weight_norm=self.weight_norm, dtype=self.dtype, name=name)
        c1 = conv(f, "conv1")(concat_elu(x))
        if a is not None:
            c1 = c1 + ShiftedConv(f, (1, 1), weight_norm=self.weight_norm, dtype=self.dtype,
                                  name="nin_a")(concat_elu(a))
        c1 = nn.Dropout(self.dropout, deterministic=not train)(concat_elu(c1))
        c2 = conv(2 * f, "conv2", 0.1)(c1)
        if label is not None:
            c2 = c2 + nn.Embed(self.num_classes, 2 * f, embedding_init=nn.initializers.normal(0.05),
                               name="label_embed")(label)[:, None, None, :]
        return x + c2[..., :f] * jax.nn.sigmoid(c2[..., f:])


class PixelCNNPP(nn.Module):
    """PixelCNN++ (module docstring): ``x`` ``[B, H, W, C]`` in ``[-1, 1]`` -> raw ``[B, H, W, out_features]``.

    Attributes:
      out_features: ``P`` (e.g. ``logistic_mixture.num_params(M, C)``).
      nr_resnet: gated ResNet blocks per stage and stream (up pass; ``+1`` in the down pass
        above the lowest resolution).
      nr_filters: ``F``, channels of both streams.
      num_stages: resolutions ``H, H/2, ..., H/2^(S-1)``.
      dropout: dropout rate inside the blocks (``train=True`` only; rng ``'dropout'``).
      num_classes: ``> 0`` for class conditioning (a label embedding in every block).
      weight_norm: weight-normalized layers (the paper's) or plain ones.
      dtype: compute dtype of the convolutions (``None``: float32; module docstring).
      remat: ``'none'``, ``'full'`` or ``'dots_saveable'`` per gated ResNet block.
    """

    out_features: int
    nr_resnet: int = 5
    nr_filters: int = 160
    num_stages: int = 3
    dropout: float = 0.5
    num_classes: int = 0
    weight_norm: bool = True
    dtype: Optional[Any] = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, label: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"PixelCNNPP: x must be [B, H, W, C], got shape {x.shape}")
        check_image_size(x.shape[1:], self.num_stages, f"PixelCNNPP num_stages={self.num_stages} (x {x.shape})")
        if (label is None) != (self.num_classes == 0):
            raise ValueError(f"PixelCNNPP: label must be given iff num_classes > 0 "
                             f"(num_classes={self.num_classes}, label {'missing' if label is None else 'given'})")
        if label is not None and label.shape != x.shape[:1]:
            raise ValueError(f"PixelCNNPP: label must be [{x.shape[0]}], got shape {label.shape}")
        F, wn = self.nr_filters, self.weight_norm
        dt = self.dtype
        conv = lambda kernel, shift, stride=1: ShiftedConv(F, kernel, shift, stride, weight_norm=wn, dtype=dt)
        block_cls = remat_block(GatedResnet, self.remat, static_argnums=(4,))  # train
        n_block = itertools.count()  # the names flax gives unwrapped blocks: params independent of remat
        block = lambda shift: block_cls(shift, self.dropout, self.num_classes, wn, dt,
                                        name=f"GatedResnet_{next(n_block)}")
        x_pad = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)

        # Up pass. The first layer removes the current pixel from both streams.
        us = [down_shift(conv((2, 3), "down")(x_pad))]
        uls = [down_shift(conv((1, 3), "down")(x_pad)) + right_shift(conv((2, 1), "down_right")(x_pad))]
        for s in range(self.num_stages):
            if s > 0:
                us.append(conv((2, 3), "down", 2)(us[-1]))
                uls.append(conv((2, 2), "down_right", 2)(uls[-1]))
            for _ in range(self.nr_resnet):
                us.append(block("down")(us[-1], None, label, train))
                uls.append(block("down_right")(uls[-1], us[-1], label, train))

        # Down pass with the up pass's activations as short-cuts (last in, first out).
        u, ul = us.pop(), uls.pop()
        for s in range(self.num_stages):
            if s > 0:
                u = ShiftedConvTranspose(F, (2, 3), "down", wn, dt)(u)
                ul = ShiftedConvTranspose(F, (2, 2), "down_right", wn, dt)(ul)
            for _ in range(self.nr_resnet + (s > 0)):
                u = block("down")(u, us.pop(), label, train)
                ul = block("down_right")(ul, jnp.concatenate([u, uls.pop()], axis=-1), label, train)
        assert not us and not uls
        return ShiftedConv(self.out_features, (1, 1), weight_norm=wn, name="out")(jax.nn.elu(ul))
