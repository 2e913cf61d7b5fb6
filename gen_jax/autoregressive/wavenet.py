"""WaveNet (van den Oord et al. 2016, "WaveNet: A generative model for raw audio") and its fast
queue-based generator (Paine et al. 2016, "Fast Wavenet generation algorithm").

The network gives, for codes ``x_1..x_T`` in ``0..Q-1`` (``Q = 256`` mu-law levels, Sec. 2.2),
logits of ``p(x_t | x_<t, h, y)`` (Sec. 2, Eq. 1 and Eq. 3)

    p(x | h, y) = prod_t p(x_t | x_1, ..., x_{t-1}, h, y),

computed for all ``t`` in parallel (teacher forcing) by a stack of causal convolutions.

Architecture (shapes ``[B, T, C]``):

1. **Input** (Sec. 2.1): the codes are embedded (a one-hot times a ``[Q, R]`` matrix) and
   shifted right by one step (position 0 gets the zero vector), so position ``t`` sees codes
   ``< t`` only; then a causal convolution of ``input_kernel_size`` taps, ``R`` channels.
2. **Residual blocks** (Sec. 2.4, Fig. 4), one per dilation ``d`` in ``dilations`` (e.g.
   ``1, 2, ..., 2^(n-1)`` repeated per stack, Sec. 2.1): a dilated causal convolution of
   ``kernel_size = K`` taps, ``out_t = sum_k W_k x_{t - (K-1-k) d}`` (left zero padding of
   ``(K-1) d``), producing the filter and gate pre-activations, then the gated activation
   (Sec. 2.3, Eq. 2; conditioned, Sec. 2.5, Eq. 3)

       z = tanh(W_f * x + V_f^T h + V_f * y) . sigma(W_g * x + V_g^T h + V_g * y),

   with ``h`` the one-hot global condition (``label``, Eq. 3 first form) and ``y`` the local
   condition upsampled to the audio rate (Eq. 3 second form, ``V * y`` a 1x1 convolution);
   a 1x1 convolution of ``z`` is added to the block input (residual) and another one is the
   block's parameterised skip output (``S`` channels).
3. **Output** (Sec. 2.4, Fig. 4): ``ReLU -> 1x1 (S) -> ReLU -> 1x1 (Q)`` on the sum of the
   skips, giving logits ``[B, T, Q]`` of a ``Q``-way softmax (Sec. 2.2). The last layer is
   zero-initialised (the model starts at the uniform distribution, 8 bits per sample).

Local conditioning ``y``: int ids ``[B, F]`` at ``1 / hop`` of the audio rate (``T = F hop``),
embedded to ``local_channels`` and upsampled to ``[B, T, local_channels]`` by repetition or by a
learned transposed convolution with kernel = stride = ``hop`` (Sec. 2.5, "transposed
convolutional network (learned upsampling)"; here one linear layer, not a network).

Receptive field: logits at ``t`` depend on codes ``t - r .. t - 1`` with

    r = receptive_field = (input_kernel_size - 1) + (K - 1) sum(dilations) + 1

(Sec. 2.1: ``2^n`` per stack of ``n`` doubling dilations with ``K = 2``).

**Fast generation** (Paine et al. 2016, Sec. 2-3, Alg. 1): every causal convolution keeps a
queue (a ring buffer) of its past inputs of length ``(K - 1) d``. At step ``t`` a layer reads
its inputs at ``t - d, ..., t - (K-1) d`` from the queue ("pop"), combines them with its
current input (one matrix product per tap), and writes the current input into the slot it just
freed ("push"), so one step costs ``O(#layers)`` matrix-vector products instead of recomputing
the ``O(receptive field)`` positions the output depends on. :func:`generate_fast` runs all
steps in one ``lax.scan`` whose carry holds every queue. :func:`generate_naive` instead re-runs
the whole causal net over the window of the last ``receptive_field`` inputs at every step (the
whole prefix while ``t < receptive_field``), also inside one ``lax.scan``; both draw the same
codes from the same key. :func:`teacher_forced_logits` drives the queue steps with given codes
(tests check it against the full network).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

UPSAMPLES = ("repeat", "transposed")


def receptive_field(dilations: Sequence[int], kernel_size: int, input_kernel_size: int) -> int:
    """``r = (input_kernel_size - 1) + (kernel_size - 1) sum(dilations) + 1``: the logits at ``t``
    depend on codes ``t - r .. t - 1`` exactly (module docstring)."""
    return (input_kernel_size - 1) + (kernel_size - 1) * int(sum(dilations)) + 1


class CausalConv(nn.Module):
    """Dilated causal 1-D convolution ``out_t = b + sum_k x_{t - (K-1-k) d} W_k`` (WaveNet Sec.
    2.1, Fig. 2-3): ``[B, T, C_in] -> [B, T, features]``, left zero padding ``(K-1) d``.

    :meth:`step` computes one output from its taps ``[B, K, C_in]`` (oldest first: the inputs
    at ``t - (K-1) d, ..., t - d, t``), the same formula the fast generator uses.
    """

    in_features: int
    features: int
    kernel_size: int
    dilation: int = 1

    def setup(self):
        self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                                 (self.kernel_size, self.in_features, self.features))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

    def __call__(self, x: jax.Array) -> jax.Array:
        pad = (self.kernel_size - 1) * self.dilation
        x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0)))
        y = jax.lax.conv_general_dilated(x, self.kernel, window_strides=(1,), padding="VALID",
                                         rhs_dilation=(self.dilation,),
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return y + self.bias

    def step(self, taps: jax.Array) -> jax.Array:
        """``taps [B, K, C_in]`` -> ``[B, features]``."""
        return jnp.einsum("bkc,kco->bo", taps, self.kernel) + self.bias


class WaveNet(nn.Module):
    """WaveNet logits network (module docstring). Params are shared by the full pass
    (:meth:`__call__`), the one-step pass (:meth:`step`) and the conditioning (:meth:`conditioning`).

    Attributes:
      num_codes: ``Q`` (256 for 8-bit mu-law).
      residual_channels: ``R``; gate_channels: ``G`` (the width of ``z``); skip_channels: ``S``.
      dilations: one residual block per entry.
      kernel_size: ``K`` taps of the dilated convolutions (>= 2).
      input_kernel_size: taps of the input causal convolution (>= 1).
      num_classes: global-condition classes (0 = unconditional).
      num_local_ids: local-condition ids (0 = no local conditioning).
      hop: audio samples per local-condition frame.
      local_channels: embedding width of the local condition.
      local_upsample: ``'repeat'`` or ``'transposed'``.
    """

    num_codes: int = 256
    residual_channels: int = 32
    gate_channels: int = 32
    skip_channels: int = 64
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    kernel_size: int = 2
    input_kernel_size: int = 2
    num_classes: int = 0
    num_local_ids: int = 0
    hop: int = 1
    local_channels: int = 16
    local_upsample: str = "transposed"

    def setup(self):
        r, g, s = self.residual_channels, self.gate_channels, self.skip_channels
        self.embedding = self.param("embedding", nn.initializers.normal(1.0), (self.num_codes, r))
        self.input_conv = CausalConv(r, r, self.input_kernel_size, 1)
        n = len(self.dilations)
        self.convs = [CausalConv(r, 2 * g, self.kernel_size, d) for d in self.dilations]
        self.skips = [nn.Dense(s) for _ in range(n)]
        self.residuals = [nn.Dense(r) for _ in range(n - 1)]  # the last block has no residual out
        if self.num_classes:
            self.global_proj = [nn.Dense(2 * g, use_bias=False) for _ in range(n)]  # V^T h
        if self.num_local_ids:
            self.local_embed = nn.Embed(self.num_local_ids, self.local_channels)
            if self.local_upsample == "transposed":
                self.local_up = self.param(
                    "local_up", nn.initializers.lecun_normal(),
                    (self.hop, self.local_channels, self.local_channels))
                self.local_up_bias = self.param("local_up_bias", nn.initializers.zeros, (self.local_channels,))
            self.local_proj = [nn.Dense(2 * g, use_bias=False) for _ in range(n)]  # V * y
        self.out_hidden = nn.Dense(s)
        self.out_logits = nn.Dense(self.num_codes, kernel_init=nn.initializers.zeros)

    # -- inputs and conditions

    def embed_codes(self, codes: jax.Array) -> jax.Array:
        """int codes ``[...]`` -> ``[..., R]``."""
        return jnp.take(self.embedding, codes, axis=0)

    def embed_one_hot(self, x: jax.Array) -> jax.Array:
        """float one-hot codes ``[B, T, Q]`` -> ``[B, T, R]`` (the same map as :meth:`embed_codes`,
        differentiable in the input: the causality test differentiates through it)."""
        return x @ self.embedding

    def conditioning(self, label: Optional[jax.Array], local_cond: Optional[jax.Array]):
        """``(h [B, num_classes] one-hot or None, y [B, F hop, local_channels] or None)``."""
        h = jax.nn.one_hot(label, self.num_classes, dtype=jnp.float32) if self.num_classes else None
        y = None
        if self.num_local_ids:
            e = self.local_embed(local_cond)  # [B, F, Cl]
            b, f, c = e.shape
            if self.local_upsample == "repeat":
                y = jnp.repeat(e, self.hop, axis=1)
            else:  # transposed conv, kernel = stride = hop: frame f -> samples [f hop, (f+1) hop)
                y = (jnp.einsum("bfc,kcd->bfkd", e, self.local_up) + self.local_up_bias).reshape(b, f * self.hop, c)
        return h, y

    # -- full (teacher-forced) pass

    def _gate(self, i: int, pre: jax.Array, h, y) -> jax.Array:
        if h is not None:
            gh = self.global_proj[i](h)
            pre = pre + (gh[:, None, :] if pre.ndim == 3 else gh)
        if y is not None:
            pre = pre + self.local_proj[i](y)
        f, g = jnp.split(pre, 2, axis=-1)
        return jnp.tanh(f) * jax.nn.sigmoid(g)  # Eq. 2

    def _output(self, skip: jax.Array) -> jax.Array:
        return self.out_logits(nn.relu(self.out_hidden(nn.relu(skip))))

    def core(self, e_shifted: jax.Array, h, y) -> jax.Array:
        """Shifted input embeddings ``[B, T, R]`` (position ``t`` holds code ``t - 1``) ->
        logits ``[B, T, Q]``."""
        x = self.input_conv(e_shifted)
        skip = 0.0
        for i in range(len(self.dilations)):
            z = self._gate(i, self.convs[i](x), h, y)
            skip = skip + self.skips[i](z)
            if i < len(self.dilations) - 1:
                x = x + self.residuals[i](z)
        return self._output(skip)

    def forward_embedded(self, e: jax.Array, label=None, local_cond=None) -> jax.Array:
        """Unshifted input embeddings ``[B, T, R]`` -> logits ``[B, T, Q]``."""
        h, y = self.conditioning(label, local_cond)
        return self.core(shift_right(e), h, y)

    def __call__(self, codes: jax.Array, label=None, local_cond=None) -> jax.Array:
        """codes int ``[B, T]`` (+ ``label [B]``, ``local_cond [B, F]``) -> logits ``[B, T, Q]``."""
        return self.forward_embedded(self.embed_codes(codes), label, local_cond)

    def logits_from_one_hot(self, x: jax.Array, label=None, local_cond=None) -> jax.Array:
        """float one-hot ``[B, T, Q]`` -> logits ``[B, T, Q]``."""
        return self.forward_embedded(self.embed_one_hot(x), label, local_cond)

    # -- one step of the fast generator

    def queue_shapes(self, batch: int) -> tuple[tuple[int, int, int], ...]:
        """Shapes of the queues: the input convolution's (if it has > 1 tap), then one per block."""
        r = self.residual_channels
        shapes = [(batch, self.input_kernel_size - 1, r)] if self.input_kernel_size > 1 else []
        return tuple(shapes + [(batch, (self.kernel_size - 1) * d, r) for d in self.dilations])

    def step(self, e_t: jax.Array, queues: tuple, t: jax.Array, h, y_t) -> tuple[jax.Array, tuple]:
        """One generation step (Paine et al. 2016, Alg. 1).

        Args:
          e_t: ``[B, R]`` the shifted input at ``t`` (embedding of code ``t - 1``; zeros at 0).
          queues: as :meth:`queue_shapes`, holding past layer inputs (zeros initially).
          t: int32 scalar, the time step.
          h: ``[B, num_classes]`` or None; y_t: ``[B, local_channels]`` (the upsampled local
            condition at ``t``) or None.

        Returns:
          ``(logits [B, Q], new queues)``.
        """
        queues = list(queues)
        qi = 0
        if self.input_kernel_size > 1:
            taps, queues[0] = _pop_push(queues[0], e_t, t, 1, self.input_kernel_size)
            qi = 1
        else:
            taps = e_t[:, None]
        x = self.input_conv.step(taps)
        skip = 0.0
        for i, d in enumerate(self.dilations):
            taps, queues[qi + i] = _pop_push(queues[qi + i], x, t, d, self.kernel_size)
            z = self._gate(i, self.convs[i].step(taps), h, y_t)
            skip = skip + self.skips[i](z)
            if i < len(self.dilations) - 1:
                x = x + self.residuals[i](z)
        return self._output(skip), tuple(queues)


def shift_right(e: jax.Array) -> jax.Array:
    """``[B, T, C]`` -> ``[B, T, C]`` with ``out[:, t] = e[:, t - 1]`` and zeros at ``t = 0``."""
    return jnp.pad(e, ((0, 0), (1, 0), (0, 0)))[:, :-1]


def _pop_push(buf: jax.Array, x_t: jax.Array, t: jax.Array, dilation: int, kernel_size: int):
    """Ring-buffer queue of a causal conv's past inputs (Paine et al. 2016, Sec. 3).

    ``buf [B, L, C]`` with ``L = (K - 1) d`` holds input ``x_tau`` in slot ``tau mod L`` for the
    last ``L`` steps (zeros before time 0 = the convolution's zero padding). Returns the taps
    ``[B, K, C]`` (inputs at ``t - (K-1) d, ..., t - d, t``) and the buffer with ``x_t`` written
    into slot ``t mod L`` -- the slot of ``x_{t - L}``, the oldest entry, just read.
    """
    length = buf.shape[1]
    lags = dilation * jnp.arange(kernel_size - 1, 0, -1)  # (K-1) d, ..., d
    past = jnp.take(buf, jnp.mod(t - lags, length), axis=1)  # [B, K-1, C]
    taps = jnp.concatenate([past, x_t[:, None]], axis=1)
    buf = jax.lax.dynamic_update_slice_in_dim(buf, x_t[:, None].astype(buf.dtype), jnp.mod(t, length), axis=1)
    return taps, buf


def _time_major(y: Optional[jax.Array]):
    return None if y is None else jnp.swapaxes(y, 0, 1)  # [B, T, C] -> [T, B, C]


def _prepare(net: WaveNet, params, num: int, length: int, label, local_cond):
    h, y = net.apply(params, label, local_cond, method=WaveNet.conditioning)
    if y is not None and y.shape[1] != length:
        raise ValueError(f"local_cond covers {y.shape[1]} samples after upsampling; expected {length}")
    queues = tuple(jnp.zeros(s, jnp.float32) for s in net.queue_shapes(num))
    return h, y, queues


def _draw(key, logits, temperature):
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


def generate_fast(net: WaveNet, params, key: jax.Array, num: int, length: int, label=None,
                  local_cond=None, temperature: float = 1.0) -> jax.Array:
    """Samples codes int32 ``[num, length]`` with the queue generator (module docstring): one
    ``lax.scan`` over time whose carry is every layer's queue and the last input embedding;
    step ``t`` draws ``x_t ~ softmax(logits_t / temperature)`` with key ``split(key, T)[t]``."""
    h, y, queues = _prepare(net, params, num, length, label, local_cond)
    keys = jax.random.split(key, length)
    e0 = jnp.zeros((num, net.residual_channels), jnp.float32)

    def body(carry, inp):
        queues, e_t = carry
        t, k, y_t = inp
        logits, queues = net.apply(params, e_t, queues, t, h, y_t, method=WaveNet.step)
        code = _draw(k, logits, temperature)
        return (queues, net.apply(params, code, method=WaveNet.embed_codes)), code

    _, codes = jax.lax.scan(body, (queues, e0), (jnp.arange(length), keys, _time_major(y)))
    return codes.T


def teacher_forced_logits(net: WaveNet, params, codes: jax.Array, label=None, local_cond=None) -> jax.Array:
    """Logits ``[B, T, Q]`` of the queue generator's steps fed the given codes ``[B, T]``
    (instead of its own samples); equal to ``net.apply(params, codes, ...)`` up to rounding."""
    b, length = codes.shape
    h, y, queues = _prepare(net, params, b, length, label, local_cond)
    e_shift = shift_right(net.apply(params, codes, method=WaveNet.embed_codes))

    def body(queues, inp):
        t, e_t, y_t = inp
        logits, queues = net.apply(params, e_t, queues, t, h, y_t, method=WaveNet.step)
        return queues, logits

    _, logits = jax.lax.scan(body, queues, (jnp.arange(length), jnp.swapaxes(e_shift, 0, 1), _time_major(y)))
    return jnp.swapaxes(logits, 0, 1)


def generate_naive(net: WaveNet, params, key: jax.Array, num: int, length: int, label=None,
                   local_cond=None, temperature: float = 1.0, window: Optional[int] = None) -> jax.Array:
    """Samples codes int32 ``[num, length]`` by re-running the full causal net at every step.

    Step ``t`` runs :meth:`WaveNet.core` on the ``window`` shifted inputs ending at ``t`` (default
    ``min(receptive_field, length)``: everything the output at ``t`` can see, the whole prefix
    ``0..t`` while ``t`` < the window), so a step costs ``O(window * #layers)``; the output is
    exact because every activation the logits at ``t`` use lies inside the window. Keys and
    draws are those of :func:`generate_fast`, so both give the same codes.
    """
    r = receptive_field(net.dilations, net.kernel_size, net.input_kernel_size)
    w = min(r if window is None else int(window), length)
    if w < min(r, length):
        raise ValueError(f"window={window} is smaller than the receptive field {r}: not exact")
    h, y, _ = _prepare(net, params, num, length, label, local_cond)
    keys = jax.random.split(key, length)
    e_buf = jnp.zeros((num, length, net.residual_channels), jnp.float32)  # shifted inputs

    def body(carry, inp):
        e_buf, codes = carry
        t, k = inp
        start = jnp.clip(t - w + 1, 0, length - w)
        e_win = jax.lax.dynamic_slice_in_dim(e_buf, start, w, axis=1)
        y_win = None if y is None else jax.lax.dynamic_slice_in_dim(y, start, w, axis=1)
        logits = net.apply(params, e_win, h, y_win, method=WaveNet.core)  # [B, w, Q]
        logits_t = jax.lax.dynamic_index_in_dim(logits, t - start, axis=1, keepdims=False)
        code = _draw(k, logits_t, temperature)
        e_next = net.apply(params, code, method=WaveNet.embed_codes)
        # Shifted input of step t + 1 (at the last step this overwrites a slot no step reads).
        e_buf = jax.lax.dynamic_update_slice_in_dim(
            e_buf, e_next[:, None], jnp.minimum(t + 1, length - 1), axis=1)
        codes = jax.lax.dynamic_update_slice_in_dim(codes, code[:, None], t, axis=1)
        return (e_buf, codes), None

    codes0 = jnp.zeros((num, length), jnp.int32)
    (_, codes), _ = jax.lax.scan(body, (e_buf, codes0), (jnp.arange(length), keys))
    return codes
