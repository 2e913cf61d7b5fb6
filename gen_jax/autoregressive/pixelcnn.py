"""PixelCNN (van den Oord et al. 2016a) and gated PixelCNN (van den Oord et al. 2016b) networks.

Both map an image ``x [B, H, W, C]`` in ``[0, 1]`` to the logits ``[B, H, W, C, K]`` of a
``K``-way softmax over the levels of every sub-pixel, where the logits of sub-pixel
``(i, j, c)`` depend only on sub-pixels before it in (row, column, channel) order
(2016a Eq. 1-2). Inputs are rescaled to ``2 x - 1``.

**PixelCNN** (2016a Sec. 3.5, Fig. 5 right, Table 1): a ``first_kernel x first_kernel``
mask-A convolution to ``2h`` channels; ``num_blocks`` residual blocks

    ReLU -> 1x1 (2h -> h) -> ReLU -> k x k (h -> h) -> ReLU -> 1x1 (h -> 2h),  + identity

with every convolution masked B; then ReLU -> 1x1 -> ReLU -> 1x1 (mask B) to ``C K`` logits.
Stacked masked ``k x k`` kernels leave a *blind spot* to the upper right of every pixel
(2016b Sec. 2.2, Fig. 1 right).

**Gated PixelCNN** (2016b Sec. 2.1-2.3, Fig. 2) removes the blind spot with two stacks:

* vertical stack: a ``(k//2 + 1) x k`` convolution over the current row and the ``k // 2`` rows
  above it (no mask); its features at row ``i`` reach the horizontal stack only after a
  one-row :func:`~gen_jax.autoregressive.masked_conv.down_shift`, so the horizontal stack at
  row ``i`` sees every pixel of the rows above within reach (no blind spot);
* horizontal stack: a ``1 x (k//2 + 1)`` convolution over the current row up to the current
  pixel (mask A in the first layer, B after, with channel groups for RGB), plus a 1x1 link
  from the (shifted) vertical pre-activations;
* gated activations (Eq. 2 and, conditioned on a vector ``h``, Eq. 4):

      y = tanh(W_{k,f} * x + V_{k,f}^T h) ⊙ sigmoid(W_{k,g} * x + V_{k,g}^T h),

  applied in both stacks with the same ``V^T h`` form (``h`` is a one-hot label or a caption
  embedding, see :mod:`gen_jax.autoregressive.image_model`);
* a residual 1x1 connection in the horizontal stack (not in the first layer) and a 1x1 skip
  connection from every layer; the summed skips go through ReLU -> 1x1 -> ReLU -> 1x1
  (mask B) to the ``C K`` logits.

Notes: Fig. 2 of 2016b draws ``n x n`` / ``1 x n`` convolutions; the taps those would mask
to zero are simply not allocated here (``(n//2 + 1) x n`` and ``1 x (n//2 + 1)``). The first
layer's ``n`` (``first_kernel``, e.g. 7 as PixelCNN's first layer, 2016a Table 1) and the
later layers' ``n`` (``kernel``) are separate fields. Dropout (rate ``dropout``) on the gated
horizontal outputs is a regularizer for small data sets, not part of the papers.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): every convolution but
the output one computes in ``dtype`` (params float32; biases added in float32, so the
residual stream, the gates' inputs and the skip sum are float32); the logits layer
(``out_logits``) is float32, so the categorical likelihood reads float32. ``remat`` wraps
each :class:`GatedLayer` of the gated PixelCNN (:mod:`gen_jax.nn.remat`).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.autoregressive.masked_conv import MaskedConv, check_channel_split, down_shift
from gen_jax.nn.remat import remat_block


def _check_input(x: jax.Array, image_channels: int, where: str) -> None:
    if x.ndim != 4 or x.shape[-1] != image_channels:
        raise ValueError(f"{where}: x must be [B, H, W, {image_channels}], got shape {x.shape}")


def _logits(h: jax.Array, out_hidden: int, c: int, k: int, dtype=None) -> jax.Array:
    """ReLU -> 1x1 (mask B) -> ReLU -> 1x1 (mask B) -> logits ``[B, H, W, C, K]`` (the hidden
    1x1 in ``dtype``, the logits layer float32)."""
    h = MaskedConv(out_hidden, (1, 1), "B", c, dtype=dtype, name="out_hidden")(nn.relu(h))
    out = MaskedConv(c * k, (1, 1), "B", c, name="out_logits")(nn.relu(h))  # groups: c-th block of K
    return out.reshape(out.shape[:3] + (c, k))


class PixelCNN(nn.Module):
    """PixelCNN of 2016a Sec. 3.5 (module docstring): ``x [B, H, W, C] -> [B, H, W, C, K]``.

    Attributes:
      image_channels: ``C``; num_levels: ``K``.
      hidden: residual-stream width ``2h`` (a multiple of ``2 C``).
      num_blocks: residual blocks.
      first_kernel: odd size of the mask-A input convolution (7 in the paper).
      kernel: odd size of the blocks' mask-B convolution (3 in the paper).
      out_hidden: width of the 1x1 output layer (a multiple of ``C``).
      dropout: dropout rate inside the residual blocks.
      dtype: compute dtype of the convolutions (``None``: float32; module docstring).
    """

    image_channels: int
    num_levels: int
    hidden: int = 64
    num_blocks: int = 4
    first_kernel: int = 7
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.image_channels
        _check_input(x, c, "PixelCNN")
        check_channel_split(self.hidden, c, "PixelCNN.hidden (2h, h = hidden / 2)", splits=2)
        check_channel_split(self.out_hidden, c, "PixelCNN.out_hidden")
        fk, k, dt = self.first_kernel, self.kernel, self.dtype
        h = MaskedConv(self.hidden, (fk, fk), "A", c, dtype=dt, name="input_conv")(2.0 * x - 1.0)  # [B, H, W, 2h]
        for i in range(self.num_blocks):
            r = MaskedConv(self.hidden // 2, (1, 1), "B", c, dtype=dt, name=f"block{i}_in")(nn.relu(h))
            r = MaskedConv(self.hidden // 2, (k, k), "B", c, dtype=dt, name=f"block{i}_conv")(nn.relu(r))
            r = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(r))
            h = h + MaskedConv(self.hidden, (1, 1), "B", c, dtype=dt, name=f"block{i}_out")(r)
        return _logits(h, self.out_hidden, c, self.num_levels, dt)


def gate(a: jax.Array) -> jax.Array:
    """Gated activation (2016b Eq. 2): ``[..., 2p] -> tanh(a[..., :p]) * sigmoid(a[..., p:])``."""
    p = a.shape[-1] // 2
    return jnp.tanh(a[..., :p]) * jax.nn.sigmoid(a[..., p:])


class GatedLayer(nn.Module):
    """One gated PixelCNN layer (2016b Fig. 2): ``(v, h, cond) -> (v', h', skip)``.

    ``v, h [B, H, W, F]`` (``F = C`` for the first layer, which reads the image), ``cond``
    ``[B, E]`` or ``None``. ``v'``, ``h'``, ``skip`` are ``[B, H, W, p]``.
    """

    features: int          # p
    kernel: int
    image_channels: int
    first: bool
    dropout: float = 0.0
    dtype: Optional[Any] = None  # compute dtype of the convolutions (module docstring)

    @nn.compact
    def __call__(self, v, h, cond: Optional[jax.Array], train: bool = False):
        p, k, c, dt = self.features, self.kernel, self.image_channels, self.dtype
        # Vertical stack: rows i - k//2 .. i, columns j - k//2 .. j + k//2 (no mask).
        v_pre = nn.Conv(2 * p, (k // 2 + 1, k), padding=((k // 2, 0), (k // 2, k // 2)), dtype=dt,
                        name="v_conv")(v).astype(jnp.float32)
        # Horizontal stack: row i, columns j - k//2 .. j (the current pixel by channel group).
        h_pre = MaskedConv(2 * p, (1, k // 2 + 1), "A" if self.first else "B", c, center=(0, k // 2),
                           out_splits=2, dtype=dt, name="h_conv")(h)
        # Link: vertical pre-activations of the rows above (shifted down one row).
        h_pre = h_pre + nn.Conv(2 * p, (1, 1), dtype=dt, name="v_to_h")(down_shift(v_pre))
        if cond is not None:  # Eq. 4: V_f^T h and V_g^T h inside both gates
            v_pre = v_pre + nn.Dense(2 * p, name="v_cond")(cond)[:, None, None, :]
            h_pre = h_pre + nn.Dense(2 * p, name="h_cond")(cond)[:, None, None, :]
        v_out = gate(v_pre)
        g = nn.Dropout(self.dropout, deterministic=not train)(gate(h_pre))  # [B, H, W, p], groups kept
        skip = MaskedConv(p, (1, 1), "B", c, dtype=dt, name="skip")(g)
        res = MaskedConv(p, (1, 1), "B", c, dtype=dt, name="res")(g)
        h_out = res if self.first else h + res
        return v_out, h_out, skip


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN of 2016b (module docstring): ``x [B, H, W, C] -> [B, H, W, C, K]``.

    ``cond [B, E]`` (optional) is the conditioning vector ``h`` of Eq. 4.

    Attributes:
      image_channels: ``C``; num_levels: ``K``.
      hidden: ``p``, channels of both stacks (a multiple of ``C``).
      num_layers: gated layers (the first one is mask A).
      first_kernel, kernel: odd ``k`` of the first layer and of the others.
      out_hidden: width of the 1x1 output layer (a multiple of ``C``).
      dropout: dropout rate on the gated horizontal outputs.
      dtype: compute dtype of the convolutions (``None``: float32; module docstring).
      remat: ``'none'``, ``'full'`` or ``'dots_saveable'`` per gated layer.
    """

    image_channels: int
    num_levels: int
    hidden: int = 64
    num_layers: int = 6
    first_kernel: int = 7
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0
    dtype: Optional[Any] = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        c = self.image_channels
        _check_input(x, c, "GatedPixelCNN")
        check_channel_split(self.hidden, c, "GatedPixelCNN.hidden")
        check_channel_split(self.out_hidden, c, "GatedPixelCNN.out_hidden")
        if cond is not None and (cond.ndim != 2 or cond.shape[0] != x.shape[0]):
            raise ValueError(f"GatedPixelCNN: cond must be [B, E] with B={x.shape[0]}, got shape {cond.shape}")
        v = h = 2.0 * x - 1.0
        skips = 0.0
        layer = remat_block(GatedLayer, self.remat, static_argnums=(4,))  # train
        for i in range(self.num_layers):
            v, h, s = layer(self.hidden, self.first_kernel if i == 0 else self.kernel, c, first=i == 0,
                            dropout=self.dropout, dtype=self.dtype, name=f"layer{i}")(v, h, cond, train)
            skips = skips + s
        return _logits(skips, self.out_hidden, c, self.num_levels, self.dtype)
