"""The message of the InputError a model function raises (the input-check tests)."""
import pytest

from gen_jax.checks import InputError


def input_error(fn, *args, **kw) -> str:
    """Calls ``fn``; asserts it raises :class:`gen_jax.checks.InputError`; returns the message."""
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    return str(e.value)


def assert_same_program(fn, *args) -> None:
    """A checked (wrapped) model function traces to exactly the jaxpr of the function it wraps."""
    import jax

    assert str(jax.make_jaxpr(fn)(*args)) == str(jax.make_jaxpr(fn.__wrapped__)(*args))
