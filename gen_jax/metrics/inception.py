"""Inception-v3 in Flax linen, in the layout used for FID (pool3 features).

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, "Rethinking the Inception architecture for
computer vision" (Fig. 5-7 blocks, Table 1 layout). The module layout follows the FID
network (Heusel et al. 2017 used TF's 2015 Inception graph): stem ``Conv2d_1a_3x3`` ..
``Conv2d_4a_3x3``, blocks ``Mixed_5b`` .. ``Mixed_7c``, global average pooling to the
2048-d ``pool3`` features, and a ``num_classes``-way linear head (1008 classes in that
graph). No auxiliary head. As in the FID graph, the pooling branches of the 35x35/17x17
blocks and ``Mixed_7b`` average without counting padding, and ``Mixed_7c`` max-pools.
Batch norm (eps 1e-3) always runs in inference mode with stored statistics.

Weights are never downloaded. :func:`load_inception_params` reads a user-supplied ``.npz``
whose keys are the flat ``'/'``-joined variable names (``params/Mixed_5b/branch1x1/conv/kernel``,
``batch_stats/Mixed_5b/branch1x1/bn/mean``, ...), checking every name and shape; convert
weights from another framework into that layout once, offline (conv kernels ``[kh, kw,
in, out]``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
POOL3_DIM = 2048
_MIN_SIZE = 75  # smallest input the stem + reductions accept


class FeatureWeightsError(ValueError):
    """A feature-network weights file is missing or does not match the architecture."""


class BasicConv(nn.Module):
    """Conv (no bias) -> batch norm (inference, eps 1e-3) -> ReLU."""

    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: Any = 0  # int or (ph, pw): symmetric zero padding

    @nn.compact
    def __call__(self, x):
        p = self.padding if isinstance(self.padding, (tuple, list)) else (self.padding,) * 2
        x = nn.Conv(self.features, tuple(self.kernel), strides=(self.strides,) * 2,
                    padding=((p[0], p[0]), (p[1], p[1])), use_bias=False, name="conv",
                    kernel_init=nn.initializers.he_normal())(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """35x35 block (Szegedy et al. 2016, Fig. 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 grid reduction (Szegedy et al. 2016, Fig. 10)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions (Szegedy et al. 2016, Fig. 6)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 grid reduction (Szegedy et al. 2016, Fig. 10 variant)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (Szegedy et al. 2016, Fig. 7).

    ``pool='avg'`` (``Mixed_7b``) or ``'max'`` (``Mixed_7c`` in the FID graph).
    """

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 trunk and head.

    Call: ``x [B, H, W, 3]`` scaled to ``[-1, 1]`` (see :func:`preprocess`; ``H, W >= 75``,
    299 for the standard metric) -> ``(logits [B, num_classes], pool3 [B, 2048])``.
    """

    num_classes: int = 1008

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < _MIN_SIZE:
            raise ValueError(f"InceptionV3 input must be [B, H, W, 3] with H, W >= {_MIN_SIZE}, "
                             f"got {x.shape}")
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # 149
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
        x = BasicConv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)  # 147
        x = _max_pool_3x3_s2(x)  # 73
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)  # 73
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
        x = _max_pool_3x3_s2(x)  # 35
        x = InceptionA(32, name="Mixed_5b")(x)  # 256
        x = InceptionA(64, name="Mixed_5c")(x)  # 288
        x = InceptionA(64, name="Mixed_5d")(x)  # 288
        x = InceptionB(name="Mixed_6a")(x)  # 17x17x768
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)  # 8x8x1280
        x = InceptionE("avg", name="Mixed_7b")(x)  # 2048
        x = InceptionE("max", name="Mixed_7c")(x)  # 2048
        pool3 = jnp.mean(x, axis=(1, 2))  # [B, 2048]
        logits = nn.Dense(self.num_classes, name="fc")(pool3)
        return logits, pool3


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """``[B, H, W, C]`` in ``[0, 1]`` with ``C in (1, 3)`` -> ``[B, size, size, 3]`` in ``[-1, 1]``.

    Grayscale is repeated to 3 channels; resizing is bilinear with ``jax.image.resize``
    (antialiased when downsampling, as recommended by Parmar et al. 2022, "On aliased resizing
    and surprising subtleties in GAN evaluation"); values are mapped by ``2 x - 1``.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [B, H, W, 1 or 3], got shape {images.shape}")
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bilinear")
    return 2.0 * x - 1.0


def abstract_variables(num_classes: int = 1008) -> dict:
    """``jax.eval_shape`` of the variables (``{'params', 'batch_stats'}``), no computation."""
    model = InceptionV3(num_classes=num_classes)
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, _MIN_SIZE, _MIN_SIZE, 3))),
                          jax.random.PRNGKey(0))


def flatten_variables(tree: Any) -> dict[str, Any]:
    """Nested dict -> ``{'a/b/c': leaf}``."""
    flat = {}

    def visit(prefix, node):
        if isinstance(node, dict) or hasattr(node, "items"):
            for k, v in node.items():
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    visit("", tree)
    return flat


def unflatten_variables(flat: dict[str, Any]) -> dict:
    """``{'a/b/c': leaf}`` -> nested dict."""
    tree: dict = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree


def random_inception_variables(seed: int = 0, num_classes: int = 1008) -> dict:
    """Random variables in the right layout (He-normal kernels, unit BN statistics).

    For smoke tests and timing only: features of random weights carry no meaning. Built in
    numpy from :func:`abstract_variables` (``np.random.default_rng(seed)``), so nothing is
    compiled.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, sds in sorted(flatten_variables(abstract_variables(num_classes)).items()):
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(sds.shape[:-1]))
            value = rng.normal(size=sds.shape) * np.sqrt(2.0 / fan_in)
        elif leaf in ("scale", "var"):
            value = np.ones(sds.shape)
        else:  # bias, mean
            value = np.zeros(sds.shape)
        out[name] = jnp.asarray(value, dtype=sds.dtype)
    return unflatten_variables(out)


def save_inception_params(variables: dict, path: str) -> None:
    """Writes variables (``{'params', 'batch_stats'}``) as an ``.npz`` of flat names."""
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten_variables(variables).items()}
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_inception_params(path: str, num_classes: int = 1008) -> dict:
    """Reads and checks an Inception-v3 weights file written in the flat ``.npz`` layout.

    Every name and shape is compared with ``jax.eval_shape`` of ``InceptionV3.init``.

    Args:
      path: ``.npz`` with keys like ``params/Mixed_5b/branch1x1/conv/kernel`` and
        ``batch_stats/Mixed_5b/branch1x1/bn/mean``.
      num_classes: size of the ``fc`` head in the file (1008 for the FID graph).

    Returns:
      variables ``{'params': ..., 'batch_stats': ...}`` of float32 ``jax.Array`` leaves.

    Raises:
      FeatureWeightsError: the file is missing or unreadable, or the first missing key,
        unexpected key, or key with a wrong shape (expected vs got), naming ``path``.
    """
    if not os.path.isfile(path):
        raise FeatureWeightsError(
            f"Inception weights file not found: {path!r} (weights are never downloaded; "
            f"convert them offline to the flat .npz layout, see gen_jax.metrics.inception)")
    try:
        with np.load(path, allow_pickle=False) as data:
            got = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - any read failure is reported with the path
        raise FeatureWeightsError(f"cannot read Inception weights file {path!r}: {e}") from e
    expected = flatten_variables(abstract_variables(num_classes))
    missing = sorted(set(expected) - set(got))
    if missing:
        raise FeatureWeightsError(
            f"{path!r}: missing key {missing[0]!r} ({len(missing)} missing in total)")
    unexpected = sorted(set(got) - set(expected))
    if unexpected:
        raise FeatureWeightsError(
            f"{path!r}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in total)")
    for name in sorted(expected):
        if tuple(got[name].shape) != tuple(expected[name].shape):
            raise FeatureWeightsError(
                f"{path!r}: key {name!r} has shape {tuple(got[name].shape)}, "
                f"expected {tuple(expected[name].shape)}")
        if not np.all(np.isfinite(got[name])):
            raise FeatureWeightsError(f"{path!r}: key {name!r} contains NaN or inf")
    return unflatten_variables({k: jnp.asarray(v, dtype=jnp.float32) for k, v in got.items()})


def count_params(variables: dict, collection: str = "params") -> int:
    """Number of scalars in one collection of a (possibly abstract) variables tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables[collection])))
