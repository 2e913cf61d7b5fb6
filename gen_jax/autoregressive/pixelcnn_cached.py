"""Cached raster-order sampling of PixelCNN and gated PixelCNN (Ramachandran et al. 2017, Sec. 3).

The networks are :class:`~gen_jax.autoregressive.pixelcnn.PixelCNN` (van den Oord et al. 2016a
Sec. 3.5) and :class:`~gen_jax.autoregressive.pixelcnn.GatedPixelCNN` (2016b Sec. 2.1-2.3);
the samplers read their parameters and draw the same sub-pixels, in the same order, from the
same keys as re-running the network on the partial image at every step
(:func:`gen_jax.autoregressive.common.raster_scan_sample`; ``H W C`` full passes), but compute
every activation once (:mod:`gen_jax.autoregressive.cached_sampling`):

* **PixelCNN**: every layer is a masked convolution whose output at ``(i, j)`` reads its input
  at rows ``< i`` and at ``(i, <= j)``, all computed at earlier steps. One ``lax.scan`` over
  the sub-pixels: step ``(i, j, c)`` computes every layer at pixel ``(i, j)`` from the caches
  of the ``k x k`` layers' inputs (windows of ``k // 2 + 1`` rows, rows below the centre are
  masked to zero), writes them, and draws sub-pixel ``c`` from its logits. A pixel is
  recomputed for each of its ``C`` sub-pixels; the last pass (channels ``< C - 1`` known) gives
  every channel group its final value (group ``g`` only sees channels ``< g`` of its pixel).
* **Gated PixelCNN**: the horizontal stack is computed pixel by pixel as above (its ``1 x
  (k//2 + 1)`` convolutions read the current row only, kept in one row buffer per layer, plus
  the link ``V2H * v_pre`` of the row above); the vertical stack's ``(k//2 + 1) x k``
  convolution at ``(i, j)`` reads columns right of ``j`` in row ``i``, so it is computed a whole
  row at a time once that row is sampled (its output at row ``i`` only reaches the horizontal
  stack of row ``i + 1``). An outer ``lax.scan`` over rows holds the vertical caches, an inner
  one over the row's ``W C`` sub-pixels.

Sampling: sub-pixel ``(i, j, c)`` is ``categorical(key_{i,j,c}, logits / T)`` with the keys of
:func:`~gen_jax.autoregressive.cached_sampling.raster_keys`, exactly as the naive sampler, so
both give the same images for the same key (their logits agree to float rounding).
Shapes: ``params`` are the network's variables (``{'params': ...}``), ``cond`` ``[N, E]`` (the
gated network's ``h``) or ``None``; both samplers return ``[N, H, W, C]`` in ``[0, 1]``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from gen_jax.autoregressive.cached_sampling import Layout, conv, dense, raster_keys
from gen_jax.autoregressive.masked_conv import layer_mask
from gen_jax.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN, gate


def _masked(p: dict, kernel_size, center, in_ch: int, groups: int, mask_type: str, out_splits: int = 1,
            rows: Optional[int] = None):
    """``(kernel * mask, bias)`` of a :class:`MaskedConv`'s params ``p``, keeping the first
    ``rows`` kernel rows (the rows below the centre are masked to zero)."""
    kernel = p["kernel"] * layer_mask(kernel_size, center, in_ch, p["kernel"].shape[-1], groups, mask_type,
                                      out_splits)
    return (kernel if rows is None else kernel[:rows]), p["bias"]


def _head(p: dict, h: jax.Array, groups: int, num_levels: int) -> jax.Array:
    """The output layers of :func:`gen_jax.autoregressive.pixelcnn._logits` at one pixel:
    ``h [N, F] -> logits [N, C, K]``."""
    w1, b1 = _masked(p["out_hidden"], (1, 1), (0, 0), h.shape[-1], groups, "B")
    h = dense(jax.nn.relu(h), w1, b1)
    w2, b2 = _masked(p["out_logits"], (1, 1), (0, 0), h.shape[-1], groups, "B")
    return dense(jax.nn.relu(h), w2, b2).reshape(h.shape[0], groups, num_levels)


def _draw(logits: jax.Array, key: jax.Array, channel, temperature) -> jax.Array:
    """``categorical(key, logits[:, channel] / T)``: levels ``[N]`` (the naive sampler's draw)."""
    lg = jax.lax.dynamic_index_in_dim(logits, channel, axis=1, keepdims=False)
    return jax.random.categorical(key, lg / temperature, axis=-1)


def _store(x: jax.Array, img: jax.Array, lay: Layout, lev: jax.Array, i, j, c, num_levels: int):
    """Writes level ``lev [N]`` at ``(i, j, c)``: ``x`` holds ``level / (K - 1)`` (the output),
    ``img`` the network input ``2 x - 1`` in ``lay``."""
    v = (lev.astype(jnp.float32) / (num_levels - 1))[:, None, None, None]
    x = jax.lax.dynamic_update_slice(x, v, (0, i, j, c))
    return x, lay.write(img, 2.0 * v - 1.0, i, j, c)


def _check(image_shape: Sequence[int], channels: int, num: int, cond, where: str):
    h, w, c = (int(s) for s in image_shape)
    if c != channels:
        raise ValueError(f"{where}: image_shape {tuple(image_shape)} has {c} channels, the network {channels}")
    if cond is not None and (cond.ndim != 2 or cond.shape[0] != num):
        raise ValueError(f"{where}: cond must be [num={num}, E], got shape {cond.shape}")
    return h, w, c


def sample_pixelcnn(net: PixelCNN, params, key: jax.Array, num: int, image_shape: Sequence[int],
                    temperature: float = 1.0) -> jax.Array:
    """Cached sampling of a :class:`PixelCNN` (module docstring): ``[num, H, W, C]`` in ``[0, 1]``."""
    hgt, wid, c = _check(image_shape, net.image_channels, num, None, "sample_pixelcnn")
    p, kk = params["params"], net.num_levels
    fk, k, half = net.first_kernel, net.kernel, net.hidden // 2
    img_lay, blk_lay = Layout(fk // 2, fk // 2, fk // 2), Layout(k // 2, k // 2, k // 2)
    w_in = _masked(p["input_conv"], (fk, fk), (fk // 2, fk // 2), c, c, "A", rows=fk // 2 + 1)
    blocks = [(_masked(p[f"block{b}_in"], (1, 1), (0, 0), net.hidden, c, "B"),
               _masked(p[f"block{b}_conv"], (k, k), (k // 2, k // 2), half, c, "B", rows=k // 2 + 1),
               _masked(p[f"block{b}_out"], (1, 1), (0, 0), half, c, "B")) for b in range(net.num_blocks)]

    def step(carry, inp):  # one sub-pixel (i, j, ch): every layer at pixel (i, j)
        x, img, caches = carry
        (i, j, ch), key_s = inp
        h = conv(img_lay.read(img, i - fk // 2, j - fk // 2, fk // 2 + 1, fk), w_in[0])[:, 0, 0] + w_in[1]
        new = []
        for ((wi, bi), (wc, bc), (wo, bo)), cache in zip(blocks, caches):
            r = jax.nn.relu(dense(jax.nn.relu(h), wi, bi))
            cache = blk_lay.write(cache, r[:, None, None], i, j)
            r = conv(blk_lay.read(cache, i - k // 2, j - k // 2, k // 2 + 1, k), wc)[:, 0, 0] + bc
            h = h + dense(jax.nn.relu(r), wo, bo)
            new.append(cache)
        lev = _draw(_head(p, h, c, kk), key_s, ch, temperature)
        x, img = _store(x, img, img_lay, lev, i, j, ch, kk)
        return (x, img, new), None

    pos = jnp.stack(jnp.meshgrid(jnp.arange(hgt), jnp.arange(wid), jnp.arange(c), indexing="ij"), -1)
    keys = raster_keys(key, 1, hgt * wid * c)[0]
    init = (jnp.zeros((num, hgt, wid, c), jnp.float32), img_lay.empty(num, hgt, wid, c),
            [blk_lay.empty(num, hgt, wid, half) for _ in blocks])
    (x, _, _), _ = jax.lax.scan(step, init, (tuple(pos.reshape(-1, 3).T), keys))
    return x


def _gated_weights(net: GatedPixelCNN, p: dict) -> list[dict]:
    """Per layer: the masked horizontal kernel (``[1, k//2 + 1, I, 2p]``) and the other kernels."""
    c, f = net.image_channels, net.hidden
    out = []
    for l in range(net.num_layers):
        k = net.first_kernel if l == 0 else net.kernel
        q = p[f"layer{l}"]
        out.append(dict(
            v=(q["v_conv"]["kernel"], q["v_conv"]["bias"]),
            h=_masked(q["h_conv"], (1, k // 2 + 1), (0, k // 2), c if l == 0 else f, c, "A" if l == 0 else "B",
                      out_splits=2),
            v_to_h=(q["v_to_h"]["kernel"], q["v_to_h"]["bias"]),
            skip=_masked(q["skip"], (1, 1), (0, 0), f, c, "B"), res=_masked(q["res"], (1, 1), (0, 0), f, c, "B"),
            v_cond=q.get("v_cond"), h_cond=q.get("h_cond")))
    return out


def sample_gated_pixelcnn(net: GatedPixelCNN, params, key: jax.Array, num: int, image_shape: Sequence[int],
                          cond: Optional[jax.Array] = None, temperature: float = 1.0) -> jax.Array:
    """Cached sampling of a :class:`GatedPixelCNN` (module docstring): ``cond [num, E]`` is
    2016b Eq. 4's ``h`` (or ``None``); returns ``[num, H, W, C]`` in ``[0, 1]``."""
    hgt, wid, c = _check(image_shape, net.image_channels, num, cond, "sample_gated_pixelcnn")
    p, kk, f, nl = params["params"], net.num_levels, net.hidden, net.num_layers
    fk, k = net.first_kernel, net.kernel
    img_lay, v_lay, h_lay = Layout(fk // 2, fk // 2, fk // 2), Layout(k // 2, k // 2, k // 2), Layout(0, k // 2)
    ws = _gated_weights(net, p)
    zero_cond = [0.0] * nl
    vc = zero_cond if cond is None else [dense(cond, w["v_cond"]["kernel"], w["v_cond"]["bias"]) for w in ws]
    hc = zero_cond if cond is None else [dense(cond, w["h_cond"]["kernel"], w["h_cond"]["bias"]) for w in ws]

    def horizontal(carry, inp, i, links):  # one sub-pixel (i, j, ch): the horizontal stack at (i, j)
        x, img, bufs = carry
        s, key_s = inp
        j, ch = s // c, s % c
        h_in = img_lay.read(img, i, j - fk // 2, 1, fk // 2 + 1)
        h, skips, new = None, 0.0, []
        for l, w in enumerate(ws):
            pre = conv(h_in, w["h"][0])[:, 0, 0] + w["h"][1]
            pre = pre + jax.lax.dynamic_index_in_dim(links[l], j, axis=1, keepdims=False)
            g = gate(pre + hc[l]) if cond is not None else gate(pre)
            skips = skips + dense(g, *w["skip"])
            if l < nl - 1:  # the last layer's h feeds no later layer
                res = dense(g, *w["res"])
                h = res if l == 0 else h + res
                buf = h_lay.write(bufs[l], h[:, None, None], 0, j)
                h_in = h_lay.read(buf, 0, j - k // 2, 1, k // 2 + 1)
                new.append(buf)
        lev = _draw(_head(p, skips, c, kk), key_s, ch, temperature)
        x, img = _store(x, img, img_lay, lev, i, j, ch, kk)
        return (x, img, new), None

    def vertical(img, vcache, i):  # the vertical stack of the finished row i: v_pre rows, new caches
        win, pres, new = img_lay.read(img, i - fk // 2, -(fk // 2), fk // 2 + 1, wid + 2 * (fk // 2)), [], []
        for l, w in enumerate(ws):
            pre = conv(win, w["v"][0]) + w["v"][1]  # [N, 1, W, 2p]
            pres.append(pre[:, 0])
            if l < nl - 1:
                cache = v_lay.write(vcache[l], gate(pre + vc[l][:, None, None]) if cond is not None else gate(pre), i, 0)
                win = v_lay.read(cache, i - k // 2, -(k // 2), k // 2 + 1, wid + 2 * (k // 2))
                new.append(cache)
        return pres, new

    def row(carry, inp):
        x, img, vcache, vpre_above, bufs = carry
        i, keys_i = inp
        links = [dense(v, *w["v_to_h"]) for v, w in zip(vpre_above, ws)]  # [N, W, 2p]: V2H * v_pre(row i - 1)
        (x, img, bufs), _ = jax.lax.scan(lambda cr, inp_s: horizontal(cr, inp_s, i, links), (x, img, bufs),
                                         (jnp.arange(wid * c), keys_i))
        vpre, vcache = vertical(img, vcache, i)
        return (x, img, vcache, vpre, bufs), None

    init = (jnp.zeros((num, hgt, wid, c), jnp.float32), img_lay.empty(num, hgt, wid, c),
            [v_lay.empty(num, hgt, wid, f) for _ in range(nl - 1)],
            [jnp.zeros((num, wid, 2 * f), jnp.float32) for _ in range(nl)],
            [h_lay.empty(num, 1, wid, f) for _ in range(nl - 1)])
    (x, *_), _ = jax.lax.scan(row, init, (jnp.arange(hgt), raster_keys(key, hgt, wid * c)))
    return x
