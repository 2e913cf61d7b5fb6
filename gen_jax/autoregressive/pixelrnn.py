"""PixelRNN with Row LSTM layers (van den Oord et al. 2016a, Sec. 3.1 and 3.4).

A Row LSTM layer processes the image one row at a time (top to bottom) and computes the
features of a whole row at once. With ``x_i`` the layer's input row ``i`` and ``h_{i-1}``,
``c_{i-1}`` the hidden and cell state of the row above (2016a Eq. 3):

    [o_i, f_i, i_i, g_i] = sigma(K^{ss} ⊛ h_{i-1} + K^{is} ⊛ x_i)
    c_i = f_i ⊙ c_{i-1} + i_i ⊙ g_i
    h_i = o_i ⊙ tanh(c_i)

where ``sigma`` is the logistic sigmoid for ``o, f, i`` and ``tanh`` for ``g``;

* input-to-state ``K^{is} ⊛ x``: a ``1 x k`` masked convolution over the row (mask A in the
  first layer, which reads the image, B after; channel groups for RGB, Sec. 3.4), computed for
  all rows of the image at once before the recurrence;
* state-to-state ``K^{ss} ⊛ h_{i-1}``: a ``1 x 3`` convolution over the previous row's hidden
  state (unmasked: the whole row above is in the past), applied inside a ``jax.lax.scan``
  over rows.

The state at ``(i, j)`` sees the row above at columns ``j - 1 .. j + 1`` and, through it, a
triangle of rows above (the Row LSTM's receptive field has blind spots by design, Sec. 3.1).

Network (2016a Sec. 3.5 / Table 1, without the 7x7 input convolution: the first Row LSTM layer
reads the image through its mask-A input-to-state convolution): ``num_layers`` Row LSTM
layers of ``hidden`` units; every layer after the first is residual (Sec. 3.5: the LSTM output
goes through a 1x1 mask-B convolution back to the ``hidden``-wide stream and is added to the
layer's input); then ReLU -> 1x1 -> ReLU -> 1x1 (mask B) to logits ``[B, H, W, C, K]``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.autoregressive.masked_conv import MaskedConv, check_channel_split
from gen_jax.autoregressive.pixelcnn import _check_input, _logits


class RowLSTM(nn.Module):
    """One Row LSTM layer (2016a Eq. 3): ``x [B, H, W, F] -> h [B, H, W, hidden]``.

    Attributes:
      hidden: LSTM units (a multiple of the channel groups ``C``).
      kernel: odd width ``k`` of the ``1 x k`` input-to-state convolution.
      mask_type: ``'A'`` (first layer) or ``'B'``.
      image_channels: channel groups ``C``.
    """

    hidden: int
    kernel: int
    mask_type: str
    image_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.hidden
        # Input-to-state for all rows at once: [B, H, W, 4n], gate blocks (o, f, i, g) each in C groups.
        x_is = MaskedConv(4 * n, (1, self.kernel), self.mask_type, self.image_channels, out_splits=4,
                          name="input_to_state")(x)
        k_ss = self.param("state_to_state", nn.initializers.lecun_normal(), (3, n, 4 * n))  # [3, n, 4n]
        b, _, w, _ = x_is.shape

        def row(carry, xs_i):  # carry: (c, h) each [B, W, n]; xs_i: [B, W, 4n]
            c_prev, h_prev = carry
            # 1 x 3 convolution as one matmul over the stacked neighbours j - 1, j, j + 1.
            hp = jnp.pad(h_prev, ((0, 0), (1, 1), (0, 0)))
            nb = jnp.concatenate([hp[:, :-2], hp[:, 1:-1], hp[:, 2:]], axis=-1)  # [B, W, 3n]
            ss = nb @ k_ss.reshape(3 * n, 4 * n)  # [B, W, 4n]
            z = ss + xs_i
            o, f, i, g = jnp.split(z, 4, axis=-1)
            c_new = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
            return (c_new, h_new), h_new

        zeros = jnp.zeros((b, w, n), x_is.dtype)
        _, hs = jax.lax.scan(row, (zeros, zeros), jnp.swapaxes(x_is, 0, 1))  # hs [H, B, W, n]
        return jnp.swapaxes(hs, 0, 1)


class PixelRNN(nn.Module):
    """Row LSTM PixelRNN (module docstring): ``x [B, H, W, C] -> logits [B, H, W, C, K]``.

    Attributes:
      image_channels: ``C``; num_levels: ``K``.
      hidden: LSTM units and residual-stream width (a multiple of ``C``).
      num_layers: Row LSTM layers.
      kernel: odd width of the input-to-state convolution (3 in the paper).
      out_hidden: width of the 1x1 output layer (a multiple of ``C``).
      dropout: dropout rate on the residual branches.
    """

    image_channels: int
    num_levels: int
    hidden: int = 32
    num_layers: int = 2
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.image_channels
        _check_input(x, c, "PixelRNN")
        check_channel_split(self.hidden, c, "PixelRNN.hidden")
        check_channel_split(self.out_hidden, c, "PixelRNN.out_hidden")
        h = RowLSTM(self.hidden, self.kernel, "A", c, name="row_lstm0")(2.0 * x - 1.0)
        for i in range(1, self.num_layers):
            r = RowLSTM(self.hidden, self.kernel, "B", c, name=f"row_lstm{i}")(h)
            r = nn.Dropout(self.dropout, deterministic=not train)(r)
            h = h + MaskedConv(self.hidden, (1, 1), "B", c, name=f"residual{i}")(r)
        return _logits(h, self.out_hidden, c, self.num_levels)
