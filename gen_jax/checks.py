"""Input checks of the model functions: what a :class:`DataSpec` says the data is.

A :class:`~gen_jax.model.GenerativeModel` built with ``data=DataSpec(...)`` wraps its public
functions (``sampler.sample``, ``likelihood.log_prob``, ``codec.encode/posterior/decode``,
``training.init`` and every phase's ``loss``/``update``) so that they check their arguments
before the wrapped function runs:

* at trace time, on any input (concrete or a tracer): the dtype of ``batch['image']``
  (float; its shape ``[B, H, W, C]`` is checked by the family's own functions), of labels and
  token ids (integers), ``num`` (a positive Python int), a ``cond`` given to an
  unconditional sampler;
* on the host, only when the input is concrete (not a tracer): no NaN/inf, images in
  ``[0, 1]`` on the level grid ``k / (K - 1)`` (README "Conventions"), labels in
  ``[0, num_classes)`` (or the null label), token ids in ``[0, vocab)``.

The checks are Python code around the call: a wrapped function traces to exactly the jaxpr of
the unwrapped one, so the compiled train step is unchanged, and on valid input it returns the
very same arrays. Inside a caller's ``jit`` the value checks cannot run eagerly; the
:func:`with_runtime_checks` variant puts them in the program through
:mod:`jax.experimental.checkify` (run its functions with :func:`checked_jit`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from gen_jax import xla_options

GRID_TOL = 1e-6
_MARK = "__gen_jax_checked__"


class DataSpec(NamedTuple):
    """What a model's data is, for the input checks.

    Attributes:
      image_shape: ``(H, W, C)`` of ``batch['image']`` (a signal's ``(T, 1, 1)``), or ``None``
        when the model reads no images.
      num_levels: ``K``: images hold ``level / (K - 1)``; 0 skips the range and grid checks.
      num_classes: labels lie in ``[0, num_classes)`` (0: the model reads no labels).
      tokens: ``((batch key, vocab size), ...)``: int token ids in ``[0, vocab)``.
      null_label: a label outside ``[0, num_classes)`` that stands for "no condition"
        (classifier-free guidance), or ``None``.
    """

    image_shape: Optional[tuple] = None
    num_levels: int = 0
    num_classes: int = 0
    tokens: tuple = ()
    null_label: Optional[int] = None


class InputError(ValueError):
    """A model function was given input that does not match its :class:`DataSpec`."""


# ------------------------------------------------------------------------------------------
# Single checks (host side; the value checks skip tracers).
# ------------------------------------------------------------------------------------------


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds values the host can read (not a tracer of ``jit``/``grad``, not an
    array sharded over several processes)."""
    return (not isinstance(x, jax.core.Tracer) and hasattr(x, "dtype")
            and getattr(x, "is_fully_addressable", True))


def _values(x: Any) -> Optional[np.ndarray]:
    return np.asarray(x) if is_concrete(x) else None


def _span(v: np.ndarray) -> str:
    return f"[{_num(np.min(v))}, {_num(np.max(v))}]"


def _num(a) -> str:
    a = float(a)
    return str(int(a)) if a.is_integer() else f"{a:.4g}"


def check_num(num: Any, where: str) -> None:
    """``num`` (samples to draw) is a Python int >= 1."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or int(num) < 1:
        raise InputError(f"{where}: num must be a positive Python int, got {num!r}")


def check_image(x: Any, spec: DataSpec, where: str, values: bool = True, shape: bool = False) -> None:
    """``x`` is a float array (``[B, *spec.image_shape]`` too with ``shape``; the families check
    shapes themselves); with ``values`` and concrete: finite, in ``[0, 1]`` and on the level
    grid ``k / (K - 1)`` within :data:`GRID_TOL`."""
    k = int(spec.num_levels)
    expected = f"level / (K - 1) in [0, 1] for K = {k} levels" if k else "floats"
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise InputError(f"{where}: expected an array, got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = f" (did you pass {x.dtype} levels? divide by {k - 1})" if k > 1 else ""
        raise InputError(f"{where}: dtype {x.dtype}; expected float32 {expected}{hint}")
    want = tuple(int(s) for s in spec.image_shape)
    if shape and (x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want):
        raise InputError(f"{where} must be [B, {', '.join(map(str, want))}], got {tuple(x.shape)}")
    v = _values(x) if values else None
    if v is None:
        return
    of = f"in an input of shape {v.shape}"
    bad = ~np.isfinite(v)
    if bad.any():
        raise InputError(f"{where}: {int(bad.sum())} non-finite value(s) (NaN/inf) {of}; expected {expected}")
    if not k:
        return
    out = (v < 0.0) | (v > 1.0)
    if out.any():
        lo, hi = float(v.min()), float(v.max())
        raise InputError(f"{where}: {int(out.sum())} value(s) outside [0, 1] {of} (values in {_span(v)}); "
                         f"expected {expected}{_range_hint(lo, hi, k, bool(np.all(v == np.round(v))))}")
    off = np.abs(v * (k - 1) - np.round(v * (k - 1))) / (k - 1)
    if k > 1 and off.max() > GRID_TOL:
        raise InputError(f"{where}: {int((off > GRID_TOL).sum())} value(s) off the level grid {of} (up to "
                         f"{off.max():.3g} from the nearest k / {k - 1}); expected {expected} "
                         f"(quantize with round(x * {k - 1}) / {k - 1})")


def _range_hint(lo: float, hi: float, k: int, integral: bool) -> str:
    if lo >= 0 and hi <= k - 1 and integral:
        return f" (did you pass levels 0..{k - 1}? divide by {k - 1})"
    if lo >= 0 and 1 < hi <= 255:
        return " (did you pass [0, 255] pixels? divide by 255 and quantize to the levels)"
    if lo >= -1 and hi <= 1:
        return " (did you pass data in [-1, 1]? use (x + 1) / 2)"
    return ""


def check_ids(x: Any, size: int, where: str, what: str, extra: Optional[int] = None) -> None:
    """``x`` holds integer ids in ``[0, size)`` (or ``extra``), values checked when concrete."""
    x = np.asarray(x) if isinstance(x, (list, tuple, int, np.integer)) else x
    if not hasattr(x, "dtype"):
        raise InputError(f"{where}: expected an int array of {what}, got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise InputError(f"{where}: dtype {x.dtype}; expected int {what} in [0, {size})")
    v = _values(x)
    if v is None or v.size == 0:
        return
    bad = (v < 0) | (v >= size)
    if extra is not None:
        bad &= v != extra
    if bad.any() and what == "token ids":
        raise InputError(f"{where}: token ids lie in {_span(v)}, outside the vocabulary [0, {size}) "
                         f"({int(bad.sum())} of {v.size} out of range, e.g. {int(v[bad].flat[0])})")
    if bad.any():
        null = "" if extra is None else f" or the null label {extra}"
        raise InputError(f"{where} values lie in {_span(v)}; expected [0, {size}){null} ({what}: "
                         f"{int(bad.sum())} of {v.size} out of range, e.g. {int(v[bad].flat[0])})")


def check_batch(batch: Any, spec: DataSpec, where: str, label_cond: bool, values: bool = True) -> None:
    """The arrays of ``batch`` the spec describes (``image``, ``label`` when labels condition,
    token keys); keys the batch lacks are left to the model."""
    if not isinstance(batch, Mapping):
        raise InputError(f"{where}: batch must be a dict of arrays, got {type(batch).__name__}")
    if spec.image_shape is not None and "image" in batch:
        check_image(batch["image"], spec, f"{where} batch['image']", values)
    check_cond_values(batch, spec, f"{where} batch", label_cond, values)


def check_cond_values(cond: Mapping, spec: DataSpec, where: str, label_cond: bool, values: bool = True) -> None:
    """Labels (when they condition the model) and token ids of a batch or condition."""
    if not values:
        return
    if label_cond and spec.num_classes and "label" in cond:
        check_ids(cond["label"], spec.num_classes, f"{where}['label']", "labels", spec.null_label)
    for key, vocab in spec.tokens:
        if key in cond and cond[key] is not None:
            check_ids(cond[key], int(vocab), f"{where}[{key!r}]", "token ids")


def _describe(cond: Any) -> str:
    if isinstance(cond, Mapping):
        return "{" + ", ".join(f"{k!r}: {_arr(v)}" for k, v in cond.items()) + "}"
    return _arr(cond)


def _arr(v: Any) -> str:
    return f"{v.dtype}{list(v.shape)}" if hasattr(v, "shape") else repr(v)


# ------------------------------------------------------------------------------------------
# Wrapping a model's functions.
# ------------------------------------------------------------------------------------------


def _marked(fn: Callable, wrapped: Callable) -> Callable:
    functools.update_wrapper(wrapped, fn)
    setattr(wrapped, _MARK, True)
    return wrapped


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


class _Ctx(NamedTuple):
    name: str
    spec: DataSpec
    conditional: bool
    cond_keys: tuple
    label_cond: bool


def _check_cond(ctx: _Ctx, cond: Any, where: str, sampler: bool) -> None:
    if cond is None:  # a conditional model without cond: the family's own error names it
        return
    if not ctx.conditional:
        if sampler:
            raise InputError(f"{where}: model {ctx.name!r} is unconditional; cond={_describe(cond)} was given")
        return
    if isinstance(cond, Mapping):
        check_cond_values(cond, ctx.spec, f"{where} cond", ctx.label_cond)


def wrap_sample(fn: Callable, ctx: _Ctx) -> Callable:
    """``sample(params, key, num, cond=None, ...)`` with ``num`` and ``cond`` checked."""
    if getattr(fn, _MARK, False):
        return fn

    def sample(*args, **kwargs):
        check_num(_arg(args, kwargs, 2, "num"), "sample")
        _check_cond(ctx, _arg(args, kwargs, 3, "cond"), "sample", sampler=True)
        return fn(*args, **kwargs)

    return _marked(fn, sample)


def wrap_batch_fn(fn: Callable, ctx: _Ctx, where: str, index: int, values: bool = True) -> Callable:
    """A function taking a batch at position ``index`` (``log_prob``, losses, updates, init)."""
    if getattr(fn, _MARK, False):
        return fn

    def batch_fn(*args, **kwargs):
        if len(args) > index:
            check_batch(args[index], ctx.spec, where, ctx.label_cond, values)
        return fn(*args, **kwargs)

    return _marked(fn, batch_fn)


def wrap_encode(fn: Callable, ctx: _Ctx, where: str) -> Callable:
    """``encode/posterior(params, x, cond=None)`` with the image ``x`` and ``cond`` checked."""
    if getattr(fn, _MARK, False):
        return fn

    def encode(*args, **kwargs):
        x = _arg(args, kwargs, 1, "x")
        if ctx.spec.image_shape is not None and x is not None:
            check_image(x, ctx.spec, f"{where} image")
        _check_cond(ctx, _arg(args, kwargs, 2, "cond"), where, sampler=False)
        return fn(*args, **kwargs)

    return _marked(fn, encode)


def wrap_decode(fn: Callable, ctx: _Ctx) -> Callable:
    """``decode(params, z, cond=None, key=None)`` with ``cond`` checked."""
    if getattr(fn, _MARK, False):
        return fn

    def decode(*args, **kwargs):
        _check_cond(ctx, _arg(args, kwargs, 2, "cond"), "decode", sampler=False)
        return fn(*args, **kwargs)

    return _marked(fn, decode)


def context(model: Any) -> _Ctx:
    """The facts of ``model`` (name, spec, conditioning) the wrappers check against."""
    c = model.conditioning
    spec = model.data
    label_cond = c is not None and "label" in c.keys and spec.num_classes > 0
    if label_cond and spec.null_label is None and c.null is not None:
        null = c.null(1)
        if isinstance(null, Mapping) and "label" in null:
            spec = spec._replace(null_label=int(np.asarray(null["label"]).reshape(-1)[0]))
    return _Ctx(name=model.name, spec=spec, conditional=c is not None,
                cond_keys=() if c is None else tuple(c.keys),
                label_cond=label_cond)


def checked_capabilities(model: Any) -> dict:
    """``{field: capability}`` of ``model`` with its public functions wrapped by the checks
    of ``model.data`` (already wrapped functions are kept as they are)."""
    ctx = context(model)
    out = {}
    if model.sampler is not None:
        out["sampler"] = model.sampler._replace(sample=wrap_sample(model.sampler.sample, ctx))
    if model.likelihood is not None:
        out["likelihood"] = model.likelihood._replace(
            log_prob=wrap_batch_fn(model.likelihood.log_prob, ctx, "log_prob", 1))
    if model.codec is not None:
        cd = model.codec
        out["codec"] = cd._replace(
            encode=wrap_encode(cd.encode, ctx, "encode"), decode=wrap_decode(cd.decode, ctx),
            posterior=None if cd.posterior is None else wrap_encode(cd.posterior, ctx, "posterior"))
    tr = model.training
    phases = tuple(_checked_phase(p, ctx) for p in tr.phases)
    out["training"] = tr._replace(init=wrap_batch_fn(tr.init, ctx, "init", 1, values=False), phases=phases)
    return out


def _checked_phase(phase: Any, ctx: _Ctx) -> Any:
    where = phase.name or "loss"
    index = 2 if phase.stateful else 1
    if phase.loss is not None:
        return dataclasses.replace(phase, loss=wrap_batch_fn(phase.loss, ctx, where, index))
    return dataclasses.replace(phase, update=wrap_batch_fn(phase.update, ctx, where, index))


# ------------------------------------------------------------------------------------------
# Runtime checks inside jit (checkify).
# ------------------------------------------------------------------------------------------


def _runtime_image(x, where: str) -> None:
    checkify.check(jnp.all(jnp.isfinite(x)), f"{where}: non-finite values (NaN/inf)")
    checkify.check(jnp.all((x >= 0) & (x <= 1)), f"{where}: values outside [0, 1]")


def _runtime_ids(x, size: int, where: str, extra: Optional[int] = None) -> None:
    ok = (x >= 0) & (x < size)
    if extra is not None:
        ok |= x == extra
    checkify.check(jnp.all(ok), f"{where}: values outside [0, {size})")


def _runtime_mapping(m: Any, ctx: _Ctx, where: str) -> None:
    if not isinstance(m, Mapping):
        return
    if ctx.spec.image_shape is not None and "image" in m:
        _runtime_image(m["image"], f"{where}['image']")
    if ctx.label_cond and "label" in m:
        _runtime_ids(m["label"], ctx.spec.num_classes, f"{where}['label']", ctx.spec.null_label)
    for key, vocab in ctx.spec.tokens:
        if key in m and m[key] is not None:
            _runtime_ids(m[key], int(vocab), f"{where}[{key!r}]")


def checked_jit(fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(checkify.checkify(fn))`` that raises :class:`InputError` (one line, the failed
    check's message) after the call when a check of :func:`with_runtime_checks` failed."""
    compiled = xla_options.jit(checkify.checkify(fn, errors=checkify.user_checks), **jit_kwargs)

    def run(*args, **kwargs):
        return _raise_failed(*compiled(*args, **kwargs))

    def lower(*args, **kwargs):
        return _CheckedLowered(compiled.lower(*args, **kwargs))

    run = functools.update_wrapper(run, fn)
    run.lower = lower
    return run


def _raise_failed(err, out):
    msg = err.get()
    if msg:
        raise InputError(msg.splitlines()[0].split(" (`check` failed)")[0].split(" (check failed at")[0])
    return out


class _CheckedLowered:
    """``checked_jit(f).lower(*args)``: ``.compile()`` gives the ahead-of-time executable,
    called without the static arguments (as ``jax.jit``'s), which raises the failed check."""

    def __init__(self, lowered):
        self._lowered = lowered

    def compile(self):
        executable = self._lowered.compile()
        return lambda *args: _raise_failed(*executable(*args))


def with_runtime_checks(model: Any) -> Any:
    """``model`` whose ``likelihood.log_prob`` and ``sampler.sample`` also check, inside the
    compiled program, that images are finite and in ``[0, 1]`` and that labels and token ids
    are in range (:func:`jax.experimental.checkify.check`).

    The checks are ``checkify`` effects: run the returned functions under
    :func:`checked_jit` (``checked_jit(m.likelihood.log_prob)``,
    ``checked_jit(m.sampler.sample, static_argnums=2)``), which compiles them and raises the
    failed check as one line after the call. The cost is a few reductions over the inputs
    and the error read back: +12% (20.1 -> 22.6 ms) on a batch-64 16x16 PixelCNN log_prob on
    CPU (``experiments/benchmarks/input_checks.py``). The host-side checks of ``model.data``
    still run first on concrete input.
    """
    if model.data is None:
        return model
    ctx = context(model)
    fields = {}
    if model.likelihood is not None:
        inner = getattr(model.likelihood.log_prob, "__wrapped__", model.likelihood.log_prob)

        def log_prob(params, batch, key, *a, **kw):
            _runtime_mapping(batch, ctx, "log_prob batch")
            return inner(params, batch, key, *a, **kw)

        fields["likelihood"] = model.likelihood._replace(log_prob=log_prob)
    if model.sampler is not None:
        inner_s = getattr(model.sampler.sample, "__wrapped__", model.sampler.sample)

        def sample(params, key, num, cond=None, *a, **kw):
            _runtime_mapping(cond, ctx, "sample cond")
            return inner_s(params, key, num, cond, *a, **kw)

        fields["sampler"] = model.sampler._replace(sample=sample)
    return dataclasses.replace(model, **fields)


def jit_log_prob(model: Any, runtime_checks: bool = True) -> Callable:
    """The compiled ``model.likelihood.log_prob(params, batch, key)``: with ``runtime_checks``
    through :func:`with_runtime_checks` and :func:`checked_jit` (raises :class:`InputError`
    after a call whose batch held NaN/inf, values outside [0, 1] or out-of-range ids), else
    plain ``jax.jit``. Both return the same numbers on valid input."""
    if not runtime_checks:
        return xla_options.jit(model.likelihood.log_prob)
    return checked_jit(with_runtime_checks(model).likelihood.log_prob)


def jit_sample(model: Any, runtime_checks: bool = True) -> Callable:
    """The compiled ``model.sampler.sample(params, key, num, cond=None)`` (``num`` static), with
    or without the runtime checks of the condition (see :func:`jit_log_prob`)."""
    if not runtime_checks:
        return xla_options.jit(model.sampler.sample, static_argnums=2)
    return checked_jit(with_runtime_checks(model).sampler.sample, static_argnums=2)
