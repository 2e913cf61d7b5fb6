"""Mixed precision: the compute dtype of a network, parsed from a config name.

The policy (Micikevicius et al. 2018, "Mixed Precision Training", Sec. 3, with bfloat16 in
place of float16 so no loss scaling is needed; Kalamkar et al. 2019):

* parameters and optimizer state stay float32 (flax ``param_dtype``, the default);
* matmuls and convolutions run in the compute dtype (flax ``dtype=``: inputs and kernels are
  cast before the product, so the product and its gradient are bfloat16 ops);
* softmax, normalizations, losses and log-likelihoods run in float32: attention logits are
  cast to float32 before the softmax, norms compute their statistics in float32, and every
  network output is cast to float32 (:func:`to_float32`) before a likelihood reads it.
  Output heads (logits, likelihood parameters, posterior parameters) are float32 layers.

``compute_dtype('float32')`` is the default everywhere and leaves every number unchanged.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gen_jax.config import ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
"""The compute dtypes a config may name."""


def compute_dtype(name: Any, field: str = "config.model.compute_dtype"):
    """The jnp dtype of a config's compute-dtype name (``'float32'`` or ``'bfloat16'``); a
    :class:`~gen_jax.config.ConfigError` naming ``field`` for anything else."""
    if isinstance(name, str) and name in COMPUTE_DTYPES:
        return COMPUTE_DTYPES[name]
    raise ConfigError(f"{field}: must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}")


def check_compute_dtype(name: Any, field: str = "config.model.compute_dtype") -> str:
    """``name`` if it is a known compute dtype, else a ``ConfigError`` naming ``field``."""
    compute_dtype(name, field)
    return name


def to_float32(tree):
    """Every floating leaf of ``tree`` as float32 (other leaves unchanged): network outputs
    before a loss or a likelihood reads them. A no-op on float32 leaves."""
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)
