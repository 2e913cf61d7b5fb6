"""Image-to-image tasks on the shapes dataset: a source image as a pure function of the target.

A :class:`PairTask` says how an image-to-image model's inputs come from a split and what its
outputs should show:

* ``source(target) -> source``: the model's input as a pure function of the target image
  (``[B, H, W, C]`` in ``[0, 1]`` -> ``[B, H, W, C_s]``; jnp, so it runs inside a model's
  loss), or ``None`` for unpaired tasks (CycleGAN) whose inputs are images of the split;
* ``rows(arrays, num) -> int [num]``: which examples of a split (``load_split`` arrays) give
  the ``num`` inputs, in order;
* ``factors(arrays, rows) -> int [num, 5]``: the factors (:data:`gen_jax.data.shapes.FACTORS`
  order: shape, colour, size, x, y) that the output for each of those rows should show;
* ``targets(arrays, rows) -> [num, H, W, C]`` in ``[0, 1]``: the exact target image of each
  output where the task has one (paired tasks), else ``None``.

:data:`TASKS` maps a config's ``model.task`` to its task; :func:`task_inputs` and
:func:`target_factors` are what models and the bake-off call, so nothing dispatches on a
model family. An unpaired task (a domain swap) adds its entry here with ``source=None``, its
``rows`` (the examples of the source domain) and ``factors`` (those rows' factors with the
swapped attribute replaced).

The paired task ``'outline'`` (the edges -> photo task of Isola et al. 2017, Sec. 4, on
shapes): the source is the coloured outline of the shape, the per-channel morphological
gradient of the image over a 3x3 window (Serra 1982),

    outline(x)[p, c] = max_{q in N(p)} x[q, c] - min_{q in N(p)} x[q, c],   N(p) = 3x3 around p,

with the window clipped at the image border. A shapes image is ``coverage * rgb`` (one flat
colour on black), so ``outline = (max_N coverage - min_N coverage) * rgb``: zero inside and
outside the shape, nonzero only within about 1.5 px of the boundary, and exactly the shape's
colour where the window spans full and zero coverage. The outline determines the filled shape
(its interior is the region the outline encloses, its colour the outline's), so the target is
a function of the input, as Pix2Pix needs.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.data.shapes import FACTORS, allowed_combos

# the colours of both circles (shape 0) and squares (shape 1) in the train and test splits
SHARED_COLOURS_0_1 = tuple(sorted({c for s, c in allowed_combos() if s == 0}
                                  & {c for s, c in allowed_combos() if s == 1}))


def _window(x: jax.Array, op: Callable, init: float) -> jax.Array:
    """``op`` (``lax.max`` / ``lax.min``) over 3x3 windows of ``[B, H, W, C]``, border clipped."""
    return jax.lax.reduce_window(x, jnp.asarray(init, x.dtype), op, (1, 3, 3, 1), (1, 1, 1, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))


def outline(images: jax.Array) -> jax.Array:
    """The coloured outline: 3x3 morphological gradient per channel (module docstring).

    ``images [B, H, W, C]`` in ``[0, 1]`` -> ``[B, H, W, C]`` in ``[0, 1]`` (float32)."""
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"outline: images must be [B, H, W, C], got shape {x.shape}")
    return _window(x, jax.lax.max, -jnp.inf) - _window(x, jax.lax.min, jnp.inf)


def images01(arrays: Mapping, num_levels: int, rows: np.ndarray) -> np.ndarray:
    """``arrays['image'][rows]`` as float32 ``level / (K - 1)`` (float input passes through)."""
    x = np.asarray(arrays["image"])[rows]
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(num_levels - 1)
    return x.astype(np.float32)


def first_rows(arrays: Mapping, num: int) -> np.ndarray:
    """The first ``num`` examples, cycled: ``arange(num) % N``."""
    n = len(np.asarray(arrays["image"]))
    if n < 1:
        raise ValueError("image-to-image inputs need a split with at least one image")
    return np.arange(num) % n


def split_factors(arrays: Mapping, rows: np.ndarray) -> np.ndarray:
    """``int [len(rows), 5]``: the split's own factors of ``rows`` (FACTORS order)."""
    missing = [f for f in FACTORS if f not in arrays]
    if missing:
        raise ValueError(f"target factors need the split's factor arrays {list(FACTORS)}; missing {missing} "
                         f"(load the split with gen_jax.data.datasets.load_split('shapes', split))")
    return np.stack([np.asarray(arrays[f])[rows] for f in FACTORS], axis=1).astype(np.int32)


class PairTask(NamedTuple):
    """An image-to-image task (module docstring). ``num_levels`` scales integer images."""

    name: str
    source: Optional[Callable]
    rows: Callable = first_rows
    factors: Callable = split_factors
    paired: bool = True

    def targets(self, arrays: Mapping, rows: np.ndarray, num_levels: int) -> Optional[np.ndarray]:
        """The target images of ``rows`` for a paired task (the split's own images), else ``None``."""
        return images01(arrays, num_levels, rows) if self.paired else None


def domain_swap(name: str, factor: str, src: int, dst: int, keep: tuple = ("", ())) -> PairTask:
    """An unpaired swap of ``factor`` from ``src`` to ``dst`` (CycleGAN): the inputs are the
    split's rows with ``factor == src`` (and, with ``keep = (factor2, values)``, ``factor2`` in
    ``values``) in order (cycled); each output should show its row's factors with ``factor``
    replaced by ``dst``."""
    col = FACTORS.index(factor)

    def rows(arrays: Mapping, num: int) -> np.ndarray:
        member = np.asarray(arrays[factor]) == src
        if keep[0]:
            member &= np.isin(np.asarray(arrays[keep[0]]), np.asarray(keep[1]))
        r = np.flatnonzero(member)
        if r.size == 0:
            raise ValueError(f"task {name!r}: the split has no example with {factor} = {src}")
        return r[np.arange(num) % r.size]

    def factors(arrays: Mapping, rows: np.ndarray) -> np.ndarray:
        f = split_factors(arrays, rows)
        f[:, col] = dst
        return f

    return PairTask(name, source=None, rows=rows, factors=factors, paired=False)


TASKS: dict[str, PairTask] = {
    "outline": PairTask("outline", source=outline),
    "circle_to_square": domain_swap("circle_to_square", "shape", 0, 1),
    # only the colours both circles and squares occur in (shapes holds out blue circles and
    # yellow squares): a swap whose domains have the same colour distribution
    "circle_to_square_shared_colours": domain_swap("circle_to_square_shared_colours", "shape", 0, 1,
                                                   ("colour", SHARED_COLOURS_0_1)),
}


def get_task(name: str, field: str = "config.model.task") -> PairTask:
    """The task named ``name``; a ``ValueError`` naming ``field`` for an unknown one."""
    if name not in TASKS:
        raise ValueError(f"{field}: unknown image-to-image task {name!r} (known: {sorted(TASKS)})")
    return TASKS[name]


def task_inputs(task: PairTask, arrays: Mapping, num: int, num_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows int [num], inputs float32 [num, H, W, C_s])``: the rows of the split the task
    uses and the model's inputs for them (the source of a paired task, the images themselves
    for an unpaired one)."""
    rows = np.asarray(task.rows(arrays, num))
    images = images01(arrays, num_levels, rows)
    if task.source is None:
        return rows, images
    return rows, np.asarray(task.source(images), np.float32)


def target_factors(name: str, arrays: Mapping, num: int) -> np.ndarray:
    """``int [num, 5]``: the factors each of the ``num`` outputs for the split ``arrays`` should
    show (FACTORS order), for the task ``name`` (the rows :func:`task_inputs` uses)."""
    task = get_task(name)
    return task.factors(arrays, np.asarray(task.rows(arrays, num)))
