"""Typed views of ml_collections configs, with errors that name the offending field.

Configs are data (ml_collections ``ConfigDict``); at a model boundary they become a typed,
frozen dataclass through :func:`from_config`, which rejects unknown fields and wrong types
before anything is compiled.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field (``config.model.latent_dim``)."""


class FieldError(ConfigError):
    """A bad value of one field, raised by :class:`Checked` configs; :func:`from_config`
    re-raises it with the field's full dotted path."""

    def __init__(self, where: str, field: str, msg: str):
        self.field, self.msg = field, msg
        super().__init__(f"{where}.{field}: {msg}")


class Checked:
    """Mixin of typed config dataclasses: the one checker their ``__post_init__`` calls.

    ``PATH`` is the config path used when the dataclass is built directly in Python (built
    through :func:`from_config`, errors name the path it was read from)::

        @dataclasses.dataclass(frozen=True)
        class VAEConfig(Checked):
            latent_dim: int = 16
            def __post_init__(self):
                self.positive("latent_dim")
    """

    PATH = "config.model"

    def __init_subclass__(cls, **kwargs):
        # Every Checked dataclass checks its Literal fields, however it is built (from_config
        # checks them too, but a dataclass built in Python would otherwise skip them).
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None:
            def __post_init__(self, _own=own):
                self.check_literals()
                _own(self)

            cls.__post_init__ = __post_init__

    def __post_init__(self):
        self.check_literals()

    def check_literals(self) -> None:
        """Raises :class:`FieldError` for a field whose value its ``Literal[...]`` type excludes."""
        for name, choices in _literal_fields(type(self)).items():
            v = getattr(self, name)
            self.require(v in choices, name, f"must be one of {list(choices)}, got {v!r}")

    def require(self, ok: bool, field: str, msg: str) -> None:
        """Raises :class:`FieldError` naming ``field`` unless ``ok``."""
        if not ok:
            raise FieldError(self.PATH, field, msg)

    def positive(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            self.require(v > 0, f, f"must be > 0, got {v!r}")

    def nonnegative(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            self.require(v >= 0, f, f"must be >= 0, got {v!r}")

    def in_range(self, field: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
        """``lo <= value <= hi`` (``<`` on an open end)."""
        v = getattr(self, field)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        self.require(ok, field, f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")


@functools.lru_cache(maxsize=None)
def _literal_fields(cls) -> dict:
    """``{field: allowed values}`` of the ``Literal`` (or ``Optional[Literal]``) fields of ``cls``."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Literal:
            out[name] = args
        elif any(typing.get_origin(a) is typing.Literal for a in args):
            out[name] = tuple(v for a in args for v in (typing.get_args(a) if typing.get_origin(a) is typing.Literal
                                                      else (None,) if a is type(None) else ()))
    return out


def _as_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"expected a mapping or ConfigDict, got {type(cfg).__name__}")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Checks ``value`` against annotation ``tp``; returns the (lightly coerced) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        errors = []
        for a in args:
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match any of {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected None, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where}: expected a sequence, got {type(value).__name__} {value!r}")
        if args and not (len(args) == 2 and args[1] is Ellipsis) and origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        return tuple(_check_type(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_config(tp, value, where)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    return value


def from_config(cls: type[T], cfg: Any, where: str = "config") -> T:
    """Builds dataclass ``cls`` from ``cfg``, naming any unknown, missing or mistyped field.

    Args:
      cls: a dataclass whose fields carry type annotations (``int``, ``float``, ``str``,
        ``bool``, ``tuple[int, ...]``, ``Literal[...]``, ``Optional[...]``, nested dataclasses).
      cfg: a ``ConfigDict`` or mapping.
      where: the dotted path of ``cfg`` used in messages, e.g. ``'config.model'``.
    """
    values = _as_dict(cfg)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown field for {cls.__name__} "
            f"(known fields: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}.{name}: required field is missing")
            continue
        kwargs[name] = _check_type(values[name], hints[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ConfigError(f"{where}.{e.field}: {e.msg}") from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from e


def typed(cls: type[T], cfg: Any, where: str = "config.model") -> T:
    """``cfg`` as a ``cls`` instance: returned as is when it already is one, else read with
    :func:`from_config` (the one ``as_<x>_config`` every factory uses)."""
    return cfg if isinstance(cfg, cls) else from_config(cls, cfg, where)
