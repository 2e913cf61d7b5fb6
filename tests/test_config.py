"""gen_jax.config: the one checker of typed configs (Checked), typed(), FieldError paths."""
import dataclasses
from typing import Literal

import pytest

from gen_jax.config import Checked, ConfigError, FieldError, from_config, typed


@dataclasses.dataclass(frozen=True)
class Inner(Checked):
    depth: int = 2

    def __post_init__(self):
        self.positive("depth")


@dataclasses.dataclass(frozen=True)
class Outer(Checked):
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    inner: Inner = dataclasses.field(default_factory=Inner)

    def __post_init__(self):
        self.in_range("rate", 0.0, 1.0, hi_open=True)
        self.require(self.mode != "b" or self.rate > 0.1, "mode", "'b' needs rate > 0.1")


def test_checks_name_the_full_path_of_the_field():
    with pytest.raises(ConfigError, match=r"^config\.model\.rate: must be in \[0.0, 1.0\), got 1.0$"):
        from_config(Outer, {"rate": 1.0}, "config.model")
    with pytest.raises(ConfigError, match=r"^config\.model\.inner\.depth: must be > 0, got 0$"):
        from_config(Outer, {"inner": {"depth": 0}}, "config.model")
    with pytest.raises(ConfigError, match=r"^config\.model\.mode: 'b' needs rate > 0.1$"):
        from_config(Outer, {"mode": "b", "rate": 0.0}, "config.model")
    with pytest.raises(ConfigError, match=r"config\.model\.mode: must be one of \['a', 'b'\], got 'c'"):
        from_config(Outer, {"mode": "c"}, "config.model")


def test_direct_construction_uses_the_class_path():
    with pytest.raises(FieldError, match=r"^config\.model\.depth: must be > 0"):
        Inner(depth=-1)
    with pytest.raises(FieldError, match=r"^config\.model\.mode: must be one of \['a', 'b'\], got 'z'"):
        Outer(mode="z")


def test_typed_passes_instances_and_reads_mappings():
    o = Outer(rate=0.2)
    assert typed(Outer, o) is o
    assert typed(Outer, {"rate": 0.25, "inner": {"depth": 3}}) == Outer(rate=0.25, inner=Inner(3))
