"""The model contract of gen_jax: a model is a bundle of pure functions with typed capabilities.

The train loop, checkpointing, sampling scripts, evaluation and the bake-off see only this
contract; they dispatch on which capabilities a model *has* (``model.sampler is None``),
never on dict keys, array shapes or family names. The shape follows optax's
``GradientTransformation``: each capability is a ``NamedTuple`` of pure functions (plus the
few constants that describe them), and a model is a frozen record of capabilities.

=================  ==========================================================  ==================
capability         functions                                                   who has it
=================  ==========================================================  ==================
``training``       ``init(key, batch) -> params``; ``phases`` (gradient or     every trainable
                   gradient-free updates, each naming its parameter group,     model
                   optimizer section and repeats); EMA groups; frozen params
``sampler``        ``sample(params, key, num, cond=None) -> x`` and its kind   generators
                   (``image`` / ``tokens`` / ``signal`` / ``points``), how to describe or
                   render samples
``likelihood``     ``log_prob(params, batch, key) -> nats [B]``, its kind      VAEs, flows, AR,
                   (exact, elbo, iwae-K, vlb, ode) and unit (dim, token)       diffusion, GMM
``codec``          ``encode(params, x, cond=None) -> z``,                      VAEs, autoencoders,
                   ``decode(params, z, cond=None) -> x``                       flows, tokenizers
``embedder``       ``embed_image``, ``embed_text`` (normalized)                contrastive models
``conditioning``   which batch keys condition the model, the null condition,   conditional models
                   how sampling conditions are drawn
``denoiser``       the noise-prediction network, its schedule, guided model    diffusion models
                   functions and the sampler factory
``classifier``     ``logits(params, x, ...) -> [B, C]``                        feature networks,
                                                                               noisy classifiers
=================  ==========================================================  ==================

Two kinds of model exist: a :class:`GenerativeModel` (a family's model: at least a sampler or
a likelihood) and a :class:`Predictor` (feature networks and noise-aware classifiers, which
the same loop trains but which never pose as generative models).

Conventions shared by every family:

* ``batch`` is a dict of arrays. ``batch['image']`` is float32 ``[B, H, W, C]`` holding
  ``level / (K - 1)`` for integer levels ``0..K-1`` (so exactly in ``[0, 1]``);
  ``batch['label']`` is int32 ``[B]``; text conditioning arrives as
  ``batch['caption_tokens']`` int32 ``[B, L]`` (0 is padding). The number of levels ``K``
  is part of :class:`gen_jax.data.datasets.DatasetInfo`.
* A likelihood of unit ``'dim'`` returns, per example, the log *density* in nats of the
  uniformly dequantized data on ``[0, 1)^D`` (or a stated lower bound of it), so that for every
  model ``bpd = (-log_prob + D log K) / (D log 2)`` (the convention of the README's
  "Conventions" section). A discrete model whose probability mass is ``P(levels)`` returns
  ``log P + D log K`` (its piecewise-constant density), which makes the formula exact for it.
  A likelihood of unit ``'token'`` returns the nats of the scored tokens and counts them.
* ``sample`` of kind ``'image'`` returns float32 ``[num, H, W, C]`` in ``[0, 1]``; of kind
  ``'tokens'`` int32 ``[num, L]`` (``describe`` prints them); of kind ``'signal'`` float32
  ``[num, T, 1, 1]`` in ``[0, 1]`` (``render`` turns them into a waveform); of kind ``'points'``
  float32 ``[num, D]`` in data coordinates (datasets of points, whose batches hold ``[B, 1, 1, D]``
  levels over ``DatasetInfo.value_range``; the image metrics do not apply).
* Params are a pytree; multi-group models use a dict ``{group: subtree}``. Every function of a
  model takes the *full* params: the trained groups merged with the frozen stage-one groups
  (:func:`full_params`).
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import numpy as np

from gen_jax.checks import DataSpec, checked_capabilities
from gen_jax.config import ConfigError

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]

FAMILIES = ("latent", "diffusion", "flow", "autoregressive", "gan", "multimodal")
SAMPLE_KINDS = ("image", "tokens", "signal", "points")
LIKELIHOOD_UNITS = ("dim", "token")
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})
# The key under which the evaluation params carry a stateful model's non-trained state (batch
# statistics), for its sampler: ``params[MODEL_STATE]`` (see :func:`gen_jax.train.loop.eval_params`).
MODEL_STATE = "model_state"


# ------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
    """One update phase of a train step.

    A train step runs its phases in order. A phase updates the parameter group(s) ``group``
    (a top-level key of the params dict, a tuple of such keys, or ``None`` for all trained
    params) ``repeats`` times; repeat ``r`` of every phase sees the step's ``r``-th batch, so a
    step of a model whose largest ``repeats`` is ``k`` consumes ``k`` fresh batches of the
    deterministic stream (a phase with ``repeats=1`` sees the first of them).

    Exactly one of ``loss`` and ``update`` is given:

    * ``loss(params, batch, key) -> (scalar, metrics)``: differentiated w.r.t. ``group`` only;
      each group's optimizer applies its gradient. With several groups (a simultaneous update
      of two players) the loss returns ``({group: scalar}, metrics)`` and every group follows
      the gradient of its own scalar, all from one forward pass.
    * ``update(params, batch, key) -> (new_params, metrics)``: a gradient-free update (EM);
      it returns the full trained params pytree.

    ``optim`` names the optimizer section of the group: ``'disc'`` reads ``config.optim.disc``
    (fields not set there fall back to ``config.optim``). ``None`` uses the section named like
    the group when the config has one, else ``config.optim`` itself.

    A ``stateful`` loss phase also reads and returns non-trained model collections (batch
    statistics): ``loss(params, model_state, batch, key) -> (loss, (metrics, model_state))``.

    Two-player training (GANs) is ``Phase('disc', d_loss, repeats=k)`` then
    ``Phase('gen', g_loss)`` (alternating), or ``Phase(('gen', 'disc'), losses)``
    (simultaneous).
    """

    group: Union[None, str, tuple[str, ...]]
    loss: Optional[Callable] = None
    update: Optional[Callable] = None
    repeats: int = 1
    name: str = ""
    stateful: bool = False
    optim: Optional[str] = None

    def __post_init__(self):
        if (self.loss is None) == (self.update is None):
            raise ValueError("Phase needs exactly one of `loss` and `update`.")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"Phase.repeats must be an int >= 1, got {self.repeats!r}.")
        if isinstance(self.group, tuple):
            if len(self.group) < 2 or len(set(self.group)) != len(self.group):
                raise ValueError(f"Phase.group: a tuple names two or more distinct groups, got {self.group}.")
            if self.update is not None:
                raise ValueError("Phase.group: a gradient-free update takes one group or None.")
            if self.optim is not None:
                raise ValueError("Phase.optim: a multi-group phase reads each group's own section.")

    @property
    def groups(self) -> tuple[Optional[str], ...]:
        """The groups this phase trains, as a tuple (``(None,)`` for all params)."""
        return self.group if isinstance(self.group, tuple) else (self.group,)


class Training(NamedTuple):
    """How a model is trained.

    Attributes:
      init: ``(key, batch) -> params``: the *trained* params only (frozen groups excluded).
      phases: the :class:`Phase` s of one train step, in order.
      ema_groups: the groups whose exponential moving average is kept when
        ``config.train.ema_decay > 0`` (the generator's, for GANs); ``None`` = all trained
        params; ``()`` = none.
      frozen: ``{group: params}`` of trained stage-one models (host arrays). They are an
        argument of the compiled step (not donated, not in the train state, never
        checkpointed) and are merged into the params every model function receives.
      init_model_state: ``(key, batch) -> collections`` of non-trained state (batch
        statistics) read by ``stateful`` phases, or ``None`` (empty state).
    """

    init: Callable
    phases: tuple[Phase, ...]
    ema_groups: Optional[tuple[str, ...]] = None
    frozen: Mapping[str, PyTree] = _EMPTY
    init_model_state: Optional[Callable] = None

    @property
    def batches_per_step(self) -> int:
        """Fresh batches one step consumes (the largest ``repeats``)."""
        return max(p.repeats for p in self.phases)


def loss_training(init: Callable, loss: Callable, **kw) -> Training:
    """The :class:`Training` of a model with one loss over all its params."""
    return Training(init=init, phases=(Phase(None, loss=loss, name="loss"),), **kw)


def update_training(init: Callable, update: Callable, **kw) -> Training:
    """The :class:`Training` of a model fitted by a gradient-free ``update`` (EM)."""
    return Training(init=init, phases=(Phase(None, update=update, name="update"),), **kw)


# ------------------------------------------------------------------------------------------
# Generative capabilities.
# ------------------------------------------------------------------------------------------


class Sampler(NamedTuple):
    """``sample(params, key, num, cond=None) -> x`` (a ``lax.scan`` inside where iterative).

    Attributes:
      sample: the sampler; ``num`` is static (Python int).
      kind: ``'image'`` (float32 ``[num, H, W, C]`` in [0, 1]), ``'tokens'`` (int32
        ``[num, L]``), ``'signal'`` (float32 ``[num, T, 1, 1]`` in [0, 1]) or ``'points'``
        (float32 ``[num, D]`` in data coordinates).
      describe: ``samples -> list[str]``, one line per sample (token models).
      render: ``samples -> np.ndarray`` for listening or viewing (a signal's waveform in
        [-1, 1], ``[num, T]``).
    """

    sample: Callable
    kind: Literal["image", "tokens", "signal", "points"] = "image"
    describe: Optional[Callable] = None
    render: Optional[Callable] = None


class Likelihood(NamedTuple):
    """``log_prob(params, batch, key) -> [B]`` nats (see the module docstring).

    Attributes:
      kind: what it is: ``'exact'``, ``'elbo'``, ``'iwae-K'``, ``'vlb'`` or ``'ode'``.
      unit: ``'dim'`` (a density over the dequantized data, reported in bits/dim) or
        ``'token'`` (nats of the scored tokens, reported in bits per token).
      count: for ``unit='token'``: ``batch -> [B]`` scored tokens per example.
    """

    log_prob: Callable
    kind: str
    unit: Literal["dim", "token"] = "dim"
    count: Optional[Callable] = None


class Codec(NamedTuple):
    """An encoder and a decoder between data and a latent space.

    Attributes:
      encode: ``(params, x, cond=None) -> z``: one point per example (a posterior mean, a
        flow's latent, or token ids).
      decode: ``(params, z, cond=None, key=None) -> x`` (data in the sampler's layout). A
        stochastic decoder returns its mean without a key, and with a key exactly what the
        model's sampler outputs for that ``z`` (a draw of ``p(x | z)`` on the data's levels),
        so a model over the latents (latent diffusion) samples like the codec's own model.
      kind: ``'continuous'`` (float latents) or ``'ids'`` (int token ids).
      posterior: ``(params, x, cond=None) -> (mean, log_var)`` for Gaussian encoders, else None.
      continuous: for a codec of kind ``'ids'`` over a vector quantizer, the continuous view of
        its latent space (a :class:`Codec` of kind ``'continuous'``): ``encode`` gives the
        pre-quantization latents ``z_e [B, h, w, D]``, ``decode`` quantizes any ``z`` to its
        nearest codes and decodes them (the quantizer absorbed into the decoder, as a
        VQ-regularized stage one of latent diffusion, Rombach et al. 2022, Sec. 3.1); else None.
    """

    encode: Callable
    decode: Callable
    kind: Literal["continuous", "ids"] = "continuous"
    posterior: Optional[Callable] = None
    continuous: Optional["Codec"] = None


class Embedder(NamedTuple):
    """``embed_image(params, x) -> [B, E]`` and ``embed_text(params, tokens) -> [B, E]``, each
    l2-normalized (contrastive models)."""

    embed_image: Callable
    embed_text: Callable
    dim: int


class Conditioning(NamedTuple):
    """What conditions a model and how sampling conditions are drawn.

    Attributes:
      keys: the batch keys the model reads as conditions, primary first (``('label',)``,
        ``('caption_tokens', 'label')``, ``('label', 'local_cond')``).
      draw: ``(num, arrays=None) -> cond``: conditions for ``num`` samples (host numpy), drawn
        from a split's ``arrays`` where the model needs data (captions, local conditioning).
      num_classes: the label range ``[0, num_classes)`` (0 when labels do not condition).
      null: ``num -> cond`` of the null condition (classifier-free guidance), or None.
    """

    keys: tuple[str, ...]
    draw: Callable
    num_classes: int = 0
    null: Optional[Callable] = None

    @property
    def key(self) -> str:
        """The primary condition key."""
        return self.keys[0]


def label_conditioning(num_classes: int, *, local_cond: bool = False, null_label: Optional[int] = None) -> Conditioning:
    """Class conditioning: samples get labels cycling ``0..C-1``; with ``local_cond`` they also
    get the ``local_cond`` of the first ``num`` examples of the split (cycled)."""
    if num_classes < 1:
        raise ValueError(f"label conditioning needs a dataset with labels (num_classes={num_classes})")

    def draw(num: int, arrays: Optional[Mapping] = None) -> dict:
        cond = {"label": (np.arange(num) % num_classes).astype(np.int32)}
        if local_cond:
            cond["local_cond"] = _rows(arrays, "local_cond", num)
        return cond

    null = None if null_label is None else (lambda num: {"label": np.full((num,), null_label, np.int32)})
    keys = ("label", "local_cond") if local_cond else ("label",)
    return Conditioning(keys=keys, draw=draw, num_classes=int(num_classes), null=null)


def split_conditioning(key: str, *, with_label: bool = True, null: Optional[Callable] = None) -> Conditioning:
    """Conditioning on a per-example array of the data (``'caption_tokens'``): samples take
    those of the first ``num`` examples of the split (cycled), with their labels."""

    def draw(num: int, arrays: Optional[Mapping] = None) -> dict:
        cond = {key: _rows(arrays, key, num)}
        if with_label and arrays is not None and "label" in arrays:
            cond["label"] = _rows(arrays, "label", num).astype(np.int32)
        return cond

    return Conditioning(keys=(key, "label") if with_label else (key,), draw=draw, null=null)


def _rows(arrays: Optional[Mapping], key: str, num: int) -> np.ndarray:
    if arrays is None or key not in arrays:
        raise ValueError(f"sampling conditions need {key!r} from a dataset split; the split given has "
                         f"{'none' if arrays is None else sorted(arrays)}")
    a = np.asarray(arrays[key])
    return a[np.arange(num) % len(a)]


class Denoiser(NamedTuple):
    """A diffusion model's network and the functions built on it.

    Attributes:
      denoise: ``(params, x_t, t, cond=None) -> output`` (``[B, ...]``; eps, x0 or v, plus
        variance channels where learned).
      schedule: the discrete noise schedule (``alphas``, ``alpha_bars``, ...).
      guided: ``(params, cond, scale, num) -> model_fn(x_t, t, ctx)`` for the samplers:
        conditional, or classifier-free guided when ``scale > 0``.
      make_sampler: ``(**settings) -> sample(params, key, num, cond=None)`` (sampler name,
        steps, eta, guidance scale, ...).
      vlb_terms: ``(params, batch, key) -> {term: [B, ...]}``: the bound's terms, or None.
      ode_log_prob: ``(params, batch, key, **opts) -> [B]`` nats by the probability-flow
        ODE, or None.
      parameterization: what ``denoise`` predicts (``'eps'``, ``'x0'``, ``'v'``).
    """

    denoise: Callable
    schedule: Any
    guided: Callable
    make_sampler: Callable
    vlb_terms: Optional[Callable] = None
    ode_log_prob: Optional[Callable] = None
    parameterization: str = "eps"


class Classifier(NamedTuple):
    """``logits(params, x, *args) -> [B, num_classes]`` (feature networks take images; noise-aware
    classifiers take ``(x_t, t)``); ``features(params, x) -> [B, F]`` where the classifier is a
    feature network."""

    logits: Callable
    num_classes: int
    features: Optional[Callable] = None


# ------------------------------------------------------------------------------------------
# Models.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
    """What the train loop trains: a name and a :class:`Training`."""

    name: str
    training: Training

    def __post_init__(self):
        if not isinstance(self.training, Training):
            raise TypeError(f"model {self.name!r}: training must be a Training, got {type(self.training).__name__}")
        if not self.training.phases:
            raise ValueError(f"model {self.name!r} has no training phases")
        for g in self.training.frozen:
            for p in self.training.phases:
                if g in p.groups:
                    raise ValueError(f"model {self.name!r}: phase {p.name or p.group!r} trains the frozen group {g!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerativeModel(Model):
    """A generative model: its training plus the capabilities it has (``None`` = lacks it).

    ``family`` is a label for tables and logs; nothing dispatches on it. ``data`` (a
    :class:`~gen_jax.checks.DataSpec`) describes the data; when given, the public functions
    (``sampler.sample``, ``likelihood.log_prob``, the codec's, ``training.init`` and the
    phases') check their inputs against it before running (:mod:`gen_jax.checks`), with
    results and compiled programs unchanged on valid input.
    """

    family: str
    sampler: Optional[Sampler] = None
    likelihood: Optional[Likelihood] = None
    codec: Optional[Codec] = None
    embedder: Optional[Embedder] = None
    conditioning: Optional[Conditioning] = None
    denoiser: Optional[Denoiser] = None
    data: Optional[DataSpec] = None

    def __post_init__(self):
        super().__post_init__()
        if self.family not in FAMILIES:
            raise ValueError(f"GenerativeModel.family must be one of {FAMILIES}, got {self.family!r}.")
        if self.sampler is None and self.likelihood is None and self.codec is None and self.embedder is None:
            raise ValueError(f"model {self.name!r} has no generative capability (sampler, likelihood, "
                             f"codec or embedder)")
        if self.sampler is not None and self.sampler.kind not in SAMPLE_KINDS:
            raise ValueError(f"model {self.name!r}: sampler.kind must be one of {SAMPLE_KINDS}, "
                             f"got {self.sampler.kind!r}")
        if self.likelihood is not None:
            if self.likelihood.unit not in LIKELIHOOD_UNITS:
                raise ValueError(f"model {self.name!r}: likelihood.unit must be one of {LIKELIHOOD_UNITS}")
            if self.likelihood.unit == "token" and self.likelihood.count is None:
                raise ValueError(f"model {self.name!r}: a per-token likelihood needs `count`")
        if self.data is not None:
            if not isinstance(self.data, DataSpec):
                raise TypeError(f"model {self.name!r}: data must be a DataSpec, got {type(self.data).__name__}")
            for field, capability in checked_capabilities(self).items():
                object.__setattr__(self, field, capability)

    @property
    def conditional(self) -> bool:
        return self.conditioning is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Predictor(Model):
    """A trained predictor that is not a generative model (feature networks for the metrics,
    noise-aware classifiers for guidance)."""

    classifier: Classifier


class Stage(NamedTuple):
    """A trained stage one handed to a stage-two factory by the experiment edge.

    Attributes:
      model: the stage-one model (its capabilities: a codec, an embedder, a sampler...).
      params: its trained params (host arrays; the EMA params when the run kept them).
      config: the stage-one experiment config (typed, :class:`gen_jax.train.experiment.ExperimentConfig`).
      workdir: where it was trained; step: the checkpoint step restored.
    """

    model: GenerativeModel
    params: PyTree
    config: Any
    workdir: str
    step: int


def full_params(model: Model, params: PyTree) -> PyTree:
    """The params every model function takes: ``params`` merged with the frozen groups."""
    frozen = model.training.frozen
    if not frozen:
        return params
    if not isinstance(params, Mapping):
        raise TypeError(f"model {model.name!r} has frozen groups; its trained params must be a dict of groups")
    return {**params, **frozen}


# ------------------------------------------------------------------------------------------
# Checks shared by the bundles.
# ------------------------------------------------------------------------------------------


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


def require_labels(num_classes: int, field: str = "config.model.conditioning") -> int:
    """``num_classes`` when the dataset has labels, else a ``ConfigError`` naming ``field``
    (the one check of every model that conditions on labels)."""
    n = int(num_classes or 0)
    if n < 1:
        raise ConfigError(f"{field}: conditioning on labels needs a dataset with labels (num_classes={n})")
    return n
