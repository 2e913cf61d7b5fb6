"""Cached raster-order sampling of PixelCNN++ (Ramachandran et al. 2017, Sec. 3, applied to
Salimans et al. 2017's network).

:class:`~gen_jax.autoregressive.pixelcnnpp.PixelCNNPP` has two causal streams over ``S``
resolutions (its module docstring): at level ``s`` (factor ``f = 2^s``) an activation of the
``u`` stream at row ``p`` depends only on image rows ``< f p``, and one of the ``ul`` stream at
``(p, q)`` on image rows ``< f p`` and on row ``f p`` left of column ``f q``. So, sampling
pixel by pixel in raster order, with every activation cached (one zero-padded map per layer
output, :class:`~gen_jax.autoregressive.cached_sampling.Layout`):

* at the start of image row ``i``, the ``u`` stream -- up pass, strided convolutions, down
  pass with its transposed convolutions and short-cuts -- is computed for row ``i // f`` of
  every level (whole rows: its ``[2, 3]`` convolutions only read the rows above and the
  current one);
* at pixel ``(i, j)``, the ``ul`` stream is computed at ``(i // f, j // f)`` of every level
  (its ``[2, 2]`` convolutions read ``(p - 1 .. p, q - 1 .. q)``, the ``nin`` links the ``u``
  activations of the same position), then the output ``nin(elu(ul))`` at ``(i, j)`` gives
  the mixture parameters of the pixel, whose channels are drawn jointly
  (:func:`gen_jax.distributions.logistic_mixture.sample`).

A low-resolution position is recomputed at every step (row) that maps onto it; its inputs are
final from the first of them on, so the recomputations write the same values. Every other
activation is computed once. The walk over the layers (:func:`plan`) mirrors
``PixelCNNPP.__call__`` (module names in creation order, the short-cut stacks' pops), and the
samples equal those of re-running the network at every pixel from the same keys
(:func:`gen_jax.autoregressive.common.raster_scan_sample`): same key per pixel, same
parameters up to float rounding.

Shapes: ``params`` are the network's variables, ``label`` int ``[N]`` or ``None``; returns
int32 levels ``[N, H, W, C]``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from gen_jax.autoregressive.cached_sampling import Layout, conv, dense, raster_keys
from gen_jax.autoregressive.pixelcnnpp import PixelCNNPP, check_image_size, concat_elu, layer_weight
from gen_jax.distributions import logistic_mixture as lm

LAYOUT = Layout(1, 1, 1)  # every map: one row above, one column either side (the [2, 3] / [2, 2] kernels)


class Op(NamedTuple):
    """One layer of the walk: ``kind`` ``'first' | 'down' | 'up' | 'block'``, its stream
    (``'u'`` or ``'ul'``), its module (= its output map's name), its input map ``x``, the
    maps concatenated into a block's ``nin`` input ``a`` (for the first ``ul`` layer: its
    second convolution), and its level."""

    kind: str
    stream: str
    name: str
    x: str
    a: tuple = ()
    level: int = 0


def plan(num_stages: int, nr_resnet: int) -> list[Op]:
    """The layers of ``PixelCNNPP(num_stages, nr_resnet)`` in the order ``__call__`` builds them."""
    counts = {}

    def new(kind):  # Flax's automatic names: <Class>_<n> per class
        counts[kind] = counts.get(kind, -1) + 1
        return f"{kind}_{counts[kind]}"

    first_u, first_ul, first_ul_left = new("ShiftedConv"), new("ShiftedConv"), new("ShiftedConv")
    ops = [Op("first", "u", first_u, "x"), Op("first", "ul", first_ul, "x", (first_ul_left,))]
    us, uls = [first_u], [first_ul]
    for s in range(num_stages):
        if s > 0:
            nu, nul = new("ShiftedConv"), new("ShiftedConv")
            ops += [Op("down", "u", nu, us[-1], (), s), Op("down", "ul", nul, uls[-1], (), s)]
            us.append(nu)
            uls.append(nul)
        for _ in range(nr_resnet):
            bu = new("GatedResnet")
            ops.append(Op("block", "u", bu, us[-1], (), s))
            us.append(bu)
            bul = new("GatedResnet")
            ops.append(Op("block", "ul", bul, uls[-1], (bu,), s))
            uls.append(bul)
    u, ul = us.pop(), uls.pop()
    for d in range(num_stages):
        lev = num_stages - 1 - d
        if d > 0:
            tu, tul = new("ShiftedConvTranspose"), new("ShiftedConvTranspose")
            ops += [Op("up", "u", tu, u, (), lev), Op("up", "ul", tul, ul, (), lev)]
            u, ul = tu, tul
        for _ in range(nr_resnet + (d > 0)):
            bu = new("GatedResnet")
            ops.append(Op("block", "u", bu, u, (us.pop(),), lev))
            u = bu
            bul = new("GatedResnet")
            ops.append(Op("block", "ul", bul, ul, (u, uls.pop()), lev))
            ul = bul
    assert not us and not uls
    return ops


def _wb(p: dict):
    return layer_weight(p), p["b"]


def _window(cache, r, c0, width: int, stream: str):
    """The input window of a ``[2, 3]`` (``u``) or ``[2, 2]`` (``ul``) shifted conv whose
    outputs are row ``r``, columns ``c0 .. c0 + width - 1``."""
    return LAYOUT.read(cache, r - 1, c0 - 1, 2, width + (2 if stream == "u" else 1))


class _Walk:
    """The layers evaluated on one row (``u`` stream) or one position (``ul`` stream) of
    every level; ``caches`` maps a layer name (and ``<block>/c1``) to its cached output."""

    def __init__(self, net: PixelCNNPP, params: dict, label: Optional[jax.Array]):
        self.p, self.f = params["params"], net.nr_filters
        self.label = label

    def first(self, op: Op, x, r, c0, width):
        p = self.p
        if op.stream == "u":  # down_shift(conv[2,3](x)): row r is the conv's row r - 1, zero at r = 0
            w, b = _wb(p[op.name])
            y = conv(LAYOUT.read(x, jnp.maximum(r - 2, -1), -1, 2, width + 2), w) + b
            return jnp.where(r > 0, y, 0.0)
        w1, b1 = _wb(p[op.name])  # ul: down_shift(conv[1,3](x)) + right_shift(conv[2,1](x)), op.a = the latter
        w2, b2 = _wb(p[op.a[0]])
        above = conv(LAYOUT.read(x, r - 1, c0 - 1, 1, width + 2), w1) + b1
        left = conv(LAYOUT.read(x, r - 1, c0 - 1, 2, width), w2) + b2
        return jnp.where(r > 0, above, 0.0) + jnp.where(c0 > 0, left, 0.0)

    def down(self, op: Op, caches, r, c0, width):  # stride-2 shifted conv from level - 1
        w, b = _wb(self.p[op.name])
        win = LAYOUT.read(caches[op.x], 2 * r - 1, 2 * c0 - 1, 2, 2 * width + (1 if op.stream == "u" else 0))
        return conv(win, w, (2, 2)) + b

    def up(self, op: Op, caches, r, c0, width):  # stride-2 transposed conv from level + 1
        w, b = _wb(self.p[op.name])
        low = LAYOUT.read(caches[op.x], r // 2, c0 // 2, 1, (width + 1) // 2)
        y = jax.lax.conv_transpose(low, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        left = (w.shape[1] - 1) // 2 if op.stream == "u" else 0
        return jax.lax.dynamic_slice(y, (0, r % 2, c0 % 2 + left, 0), (y.shape[0], 1, width, y.shape[-1])) + b

    def block(self, op: Op, caches, r, c0, width):  # GatedResnet (pixelcnnpp.GatedResnet)
        p, f = self.p[op.name], self.f
        w1, b1 = _wb(p["conv1"])
        c1 = conv(concat_elu(_window(caches[op.x], r, c0, width, op.stream)), w1) + b1
        if op.a:
            a = jnp.concatenate([LAYOUT.read(caches[m], r, c0, 1, width) for m in op.a], axis=-1)
            c1 = c1 + dense(concat_elu(a), *_wb(p["nin_a"]))
        caches[op.name + "/c1"] = LAYOUT.write(caches[op.name + "/c1"], c1, r, c0)
        w2, b2 = _wb(p["conv2"])
        c2 = conv(concat_elu(_window(caches[op.name + "/c1"], r, c0, width, op.stream)), w2) + b2
        if self.label is not None:
            c2 = c2 + jnp.take(p["label_embed"]["embedding"], self.label, axis=0)[:, None, None, :]
        x = LAYOUT.read(caches[op.x], r, c0, 1, width)
        return x + c2[..., :f] * jax.nn.sigmoid(c2[..., f:])

    def run(self, ops, caches, x, r_full, c_full, widths):
        """Every ``op`` of one stream at full-resolution row ``r_full`` (and column ``c_full``)."""
        caches = dict(caches)
        for op in ops:
            r, c0 = r_full >> op.level, c_full >> op.level
            width = widths[op.level]
            if op.kind == "first":
                y = self.first(op, x, r, c0, width)
            else:
                y = getattr(self, op.kind)(op, caches, r, c0, width)
            caches[op.name] = LAYOUT.write(caches[op.name], y, r, c0)
        return caches


def _empty_caches(ops, stream: str, num: int, hgt: int, wid: int, f: int) -> dict:
    out = {}
    for op in ops:
        if op.stream == stream:
            for name in (op.name, op.name + "/c1") if op.kind == "block" else (op.name,):
                out[name] = LAYOUT.empty(num, hgt >> op.level, wid >> op.level, f)
    return out


def sample_pixelcnnpp(net: PixelCNNPP, params, key: jax.Array, num: int, image_shape: Sequence[int],
                      num_levels: int, label: Optional[jax.Array] = None) -> jax.Array:
    """Cached sampling of a :class:`PixelCNNPP` (module docstring): int32 levels ``[num, H, W, C]``."""
    hgt, wid, c = (int(s) for s in image_shape)
    check_image_size(image_shape, net.num_stages, "sample_pixelcnnpp image_shape")
    if (label is None) != (net.num_classes == 0):
        raise ValueError(f"sample_pixelcnnpp: label must be given iff the network is class-conditional "
                         f"(num_classes={net.num_classes})")
    if label is not None and label.shape != (num,):
        raise ValueError(f"sample_pixelcnnpp: label must be [num={num}], got shape {label.shape}")
    ops = plan(net.num_stages, net.nr_resnet)
    u_ops, ul_ops = [o for o in ops if o.stream == "u"], [o for o in ops if o.stream == "ul"]
    walk = _Walk(net, params, label)
    f, k = net.nr_filters, int(num_levels)
    w_out, b_out = _wb(params["params"]["out"])
    row_widths = [wid >> s for s in range(net.num_stages)]
    ones = jnp.ones((num, 1, 1, 1), jnp.float32)

    def pixel(carry, inp, i, u_caches):
        lev_img, xpad, ul_caches = carry
        j, key_j = inp
        ul_caches = walk.run(ul_ops, {**u_caches, **ul_caches}, xpad, i, j, [1] * net.num_stages)
        ul_caches = {n: ul_caches[n] for n in carry[2]}
        ul = LAYOUT.read(ul_caches[ul_ops[-1].name], i, j, 1, 1)
        raw = dense(jax.nn.elu(ul), w_out, b_out)  # [num, 1, 1, P]
        lev = lm.sample(raw, key_j, k, c)  # [num, 1, 1, C]
        lev_img = jax.lax.dynamic_update_slice(lev_img, lev, (0, i, j, 0))
        xpad = LAYOUT.write(xpad, jnp.concatenate([lm.level_to_centre(lev, k), ones], -1), i, j)
        return (lev_img, xpad, ul_caches), None

    def row(carry, inp):
        lev_img, xpad, u_caches, ul_caches = carry
        i, keys_i = inp
        u_caches = walk.run(u_ops, u_caches, xpad, i, 0, row_widths)
        (lev_img, xpad, ul_caches), _ = jax.lax.scan(lambda cr, x: pixel(cr, x, i, u_caches),
                                                     (lev_img, xpad, ul_caches), (jnp.arange(wid), keys_i))
        return (lev_img, xpad, u_caches, ul_caches), None

    init = (jnp.zeros((num, hgt, wid, c), jnp.int32), LAYOUT.empty(num, hgt, wid, c + 1),
            _empty_caches(ops, "u", num, hgt, wid, f), _empty_caches(ops, "ul", num, hgt, wid, f))
    (lev_img, *_), _ = jax.lax.scan(row, init, (jnp.arange(hgt), raster_keys(key, hgt, wid)))
    return lev_img
