"""The spine of gen_jax: every generative model is a bundle of pure functions.

A :class:`GenerativeModel` is what the train loop, checkpointing, sharding, sampling
scripts and the bake-off see; they never know which family they run.

Conventions (shared by every family):

* ``batch`` is a dict of arrays. ``batch['image']`` is float32 ``[B, H, W, C]`` holding
  ``level / (K - 1)`` for integer levels ``0..K-1`` (so exactly in ``[0, 1]``);
  ``batch['label']`` is int32 ``[B]``; text conditioning arrives as
  ``batch['caption_tokens']`` int32 ``[B, L]`` (0 is padding). The number of levels ``K``
  is part of :class:`gen_jax.data.datasets.DatasetInfo`.
* ``log_prob`` returns, per example, the log *density* in nats of the uniformly
  dequantized data on ``[0, 1)^D`` (or a stated lower bound of it), so that for every model
  ``bpd = (-log_prob + D log K) / (D log 2)`` (DESIGN.md convention). A discrete model whose
  probability mass is ``P(levels)`` returns ``log P + D log K`` (its piecewise-constant
  density), which makes the formula exact for it.
* ``sample`` returns float32 ``[num, H, W, C]`` in ``[0, 1]`` (image models). Sequence
  models (text LMs) return int32 tokens ``[num, L]`` and say how to print them in
  ``extras['describe_samples']``; 1-D signal models use images ``[num, T, 1, 1]``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]

FAMILIES = ("latent", "diffusion", "flow", "autoregressive", "gan", "multimodal", "classifier")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One update phase of a train step.

    A train step runs its phases in order; each phase updates the parameter group ``group``
    (a top-level key of the params dict, or ``None`` for all params) ``repeats`` times.

    Exactly one of ``loss`` and ``update`` is given:

    * ``loss(params, batch, key) -> (scalar, metrics)``: differentiated w.r.t. ``group`` only;
      the group's optimizer (``optimizers[group]``) applies the gradient.
    * ``update(params, batch, key) -> (new_params, metrics)``: a gradient-free update (EM);
      it returns the full params pytree.

    A ``stateful`` loss phase also reads and returns non-trained model collections (batch
    statistics): ``loss(params, model_state, batch, key) -> (scalar, (metrics, model_state))``.

    Two-player training (GANs) is two phases, ``Phase('disc', d_loss, repeats=k)`` then
    ``Phase('gen', g_loss)``. Frozen stage-one params live in a group that no phase names.
    """

    group: Optional[str]
    loss: Optional[Callable] = None
    update: Optional[Callable] = None
    repeats: int = 1
    name: str = ""
    stateful: bool = False  # loss(params, model_state, batch, key) -> (loss, (metrics, model_state))

    def __post_init__(self):
        if (self.loss is None) == (self.update is None):
            raise ValueError("Phase needs exactly one of `loss` and `update`.")
        if self.repeats < 1:
            raise ValueError(f"Phase.repeats must be >= 1, got {self.repeats}.")


@dataclasses.dataclass(frozen=True)
class GenerativeModel:
    """A generative model as a bundle of pure functions over explicit params and keys.

    Attributes:
      name: model name (used in tables and file names).
      family: one of :data:`FAMILIES`.
      init: ``(key, batch) -> params`` (a plain pytree, a dict for multi-group models).
      loss: ``(params, batch, key) -> (scalar, metrics)``; ``None`` when ``phases`` or
        ``update`` define training.
      sample: ``(params, key, num, cond=None) -> [num, H, W, C]`` in ``[0, 1]``; ``cond`` is a
        dict like a batch (e.g. ``{'label': [num]}``) for conditional models.
      log_prob: ``(params, batch, key) -> [B]`` nats (see module docstring), or ``None``.
      bpd_kind: what ``log_prob`` is: ``'exact'``, ``'elbo'``, ``'iwae-K'``, ``'vlb'``, ``'ode'``.
      update: gradient-free ``(params, batch, key) -> (params, metrics)`` (e.g. EM).
      phases: explicit phases for multi-player training; overrides ``loss``/``update``.
      conditional: whether ``sample`` uses ``cond``.
      condition_key: the batch key a conditional model samples from: ``'label'`` (class
        conditioning) or ``'caption_tokens'`` (text conditioning).
      extras: family-specific pure functions (``encode``, ``decode``, ``reconstruct``, ...).
        ``extras['describe_samples']`` (``samples -> list[str]``), when present, is how the
        train loop writes samples of a non-image model (text LMs) instead of a PNG grid.
    """

    name: str
    family: str
    init: Callable
    loss: Optional[Callable] = None
    sample: Optional[Callable] = None
    log_prob: Optional[Callable] = None
    bpd_kind: Optional[str] = None
    update: Optional[Callable] = None
    phases: Optional[Sequence[Phase]] = None
    conditional: bool = False
    condition_key: str = "label"
    extras: Mapping[str, Callable] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"GenerativeModel.family must be one of {FAMILIES}, got {self.family!r}.")
        if self.loss is None and self.update is None and not self.phases:
            raise ValueError(f"Model {self.name!r} defines none of loss, update, phases.")
        if (self.log_prob is None) != (self.bpd_kind is None):
            raise ValueError(f"Model {self.name!r}: log_prob and bpd_kind go together.")
        if self.condition_key not in ("label", "caption_tokens"):
            raise ValueError(f"Model {self.name!r}: condition_key must be 'label' or 'caption_tokens', "
                             f"got {self.condition_key!r}.")

    def train_phases(self) -> tuple[Phase, ...]:
        """The phases a train step runs for this model."""
        if self.phases:
            return tuple(self.phases)
        if self.update is not None:
            return (Phase(group=None, update=self.update, name="update"),)
        return (Phase(group=None, loss=self.loss, name="loss"),)


def check_image_batch(x: jax.Array, image_shape: Sequence[int], where: str = "batch['image']") -> None:
    """Raises ``ValueError`` unless ``x`` is ``[B, *image_shape]`` (the message names ``where``)."""
    shape = tuple(int(s) for s in image_shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{where} must be [B, {', '.join(map(str, shape))}], got {x.shape}")


def condition_labels(cond: Optional[Mapping], b: int, where: str) -> jax.Array:
    """``cond['label']`` of a class-conditional model as int32 ``[b]``; a clear ``ValueError``
    naming ``where`` when it is missing or has the wrong shape."""
    if cond is None or "label" not in cond:
        raise ValueError(f"{where}: the model is class-conditional; pass cond={{'label': int [{b}]}}")
    lab = jax.numpy.asarray(cond["label"])
    if lab.shape != (b,):
        raise ValueError(f"{where}: cond['label'] must be [{b}], got shape {lab.shape}")
    return lab.astype(jax.numpy.int32)
