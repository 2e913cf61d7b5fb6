"""mu-law companding and 8-bit quantization of waveforms (van den Oord et al. 2016, "WaveNet:
A generative model for raw audio", Sec. 2.2; ITU-T G.711).

WaveNet models a waveform ``x_t`` in ``[-1, 1]`` through the companding transform (Sec. 2.2)

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu),        mu = 255,

whose inverse is ``f^{-1}(y) = sign(y) ((1 + mu)^{|y|} - 1) / mu``, followed by uniform
quantization of ``y = f(x)`` in ``[-1, 1]`` to ``Q = 256`` levels (mid-tread, rounding to the
nearest level):

    code = round((y + 1) / 2 * (Q - 1))  in {0, ..., Q - 1},      y_hat = 2 code / (Q - 1) - 1.

So ``code / (Q - 1) = (y_hat + 1) / 2`` is exactly the ``[0, 1]`` "image" value the library's
batches carry for ``K = Q`` levels. The quantization error in the companded domain is at most
``1 / (Q - 1)``; in the waveform domain it is roughly proportional to ``|x|`` (small amplitudes
are resolved finely), which is the point of companding.

Every function accepts numpy or JAX arrays and returns the same kind (numpy in, numpy out: the
dataset builder uses them without JAX).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

MU = 255.0
NUM_CODES = 256


def _xp(x):
    return np if isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)) else jnp


def compand(x, mu: float = MU):
    """``f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu)`` (WaveNet Sec. 2.2); ``x`` in ``[-1, 1]``
    (clipped), any shape."""
    xp = _xp(x)
    x = xp.clip(xp.asarray(x, xp.float32), -1.0, 1.0)
    return xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.log1p(mu)


def expand(y, mu: float = MU):
    """``f^{-1}(y) = sign(y) ((1 + mu)^{|y|} - 1) / mu``, the inverse of :func:`compand`."""
    xp = _xp(y)
    y = xp.clip(xp.asarray(y, xp.float32), -1.0, 1.0)
    return xp.sign(y) * xp.expm1(xp.abs(y) * np.log1p(mu)) / mu


def quantize(y, num_codes: int = NUM_CODES):
    """Companded ``y`` in ``[-1, 1]`` -> int32 codes ``round((y + 1) / 2 (Q - 1))`` in ``0..Q-1``."""
    xp = _xp(y)
    y = xp.clip(xp.asarray(y, xp.float32), -1.0, 1.0)
    return xp.clip(xp.round((y + 1.0) * (0.5 * (num_codes - 1))), 0, num_codes - 1).astype(xp.int32)


def dequantize(codes, num_codes: int = NUM_CODES):
    """int codes ``0..Q-1`` -> the companded level ``2 code / (Q - 1) - 1`` in ``[-1, 1]``."""
    xp = _xp(codes)
    return xp.asarray(codes).astype(xp.float32) * (2.0 / (num_codes - 1)) - 1.0


def encode(x, mu: float = MU, num_codes: int = NUM_CODES):
    """Waveform ``x`` in ``[-1, 1]`` -> int32 mu-law codes (``quantize(compand(x))``)."""
    return quantize(compand(x, mu), num_codes)


def decode(codes, mu: float = MU, num_codes: int = NUM_CODES):
    """int32 mu-law codes -> waveform in ``[-1, 1]`` (``expand(dequantize(codes))``)."""
    return expand(dequantize(codes, num_codes), mu)
