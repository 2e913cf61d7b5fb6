"""Rematerialization (gradient checkpointing) of the repeated blocks of a network.

Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost": keep only some activations
of the forward pass and recompute the others in the backward pass. A block wrapped by
:func:`remat_block` is a ``jax.checkpoint`` (``flax.linen.remat``) region with one of the
policies (config ``config.model.remat``):

* ``'none'``: no checkpointing (the block is returned unchanged);
* ``'full'``: save nothing inside the block but its inputs; recompute the whole block forward
  in the backward pass (the least memory);
* ``'dots_saveable'``: save the results of the block's matmuls / convolutions
  (``jax.checkpoint_policies.dots_saveable``) and recompute only the cheap elementwise ops
  (norms, activations) between them.

Rematerialization changes when values are computed, not what is computed: losses and
gradients are those of the unwrapped block (up to float reassociation). Parameter names are
unchanged, so checkpoints are interchangeable across policies.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax

from gen_jax.config import ConfigError

REMAT_POLICIES = ("none", "full", "dots_saveable")
"""The policy names a config may give."""


def remat_policy(name: Any, field: str = "config.model.remat") -> Optional[Any]:
    """The ``jax.checkpoint`` policy of ``name`` (``None`` for ``'full'``: save nothing);
    a :class:`~gen_jax.config.ConfigError` naming ``field`` for an unknown name.

    ``'none'`` has no policy either; callers check it with :func:`check_remat` first."""
    check_remat(name, field)
    if name == "dots_saveable":
        return jax.checkpoint_policies.dots_saveable
    return None


def check_remat(name: Any, field: str = "config.model.remat") -> str:
    """``name`` if it is one of :data:`REMAT_POLICIES`, else a ``ConfigError`` naming ``field``."""
    if not isinstance(name, str) or name not in REMAT_POLICIES:
        raise ConfigError(f"{field}: must be one of {list(REMAT_POLICIES)}, got {name!r}")
    return name


def remat_block(module_cls, name: str, static_argnums: Sequence[int] = (),
                field: str = "config.model.remat"):
    """``module_cls`` wrapped by ``flax.linen.remat`` with policy ``name`` (itself for ``'none'``).

    ``static_argnums`` index the ``__call__`` arguments that are Python values (``train``
    flags), counting ``self`` as 0 (the ``flax.linen.remat`` convention).
    """
    if check_remat(name, field) == "none":
        return module_cls
    return nn.remat(module_cls, policy=remat_policy(name, field), static_argnums=tuple(static_argnums))
