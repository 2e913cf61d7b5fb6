"""The XLA compiler options gen_jax compiles its programs with, and ``jit`` that applies them.

On the CPU backend the library limits YNNPACK library fusions to dot products
(``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT``, an option of jaxlib 0.10's
XLA CPU compiler; its default also hands YNNPACK the convolutions and reductions, which XLA's
own convolution and reduction code then run instead): measured by ``python -m experiments.benchmarks.xla_cpu_options`` over one
train step per family, it is the one option set that is faster for the conv networks (the DDPM
U-Net about 1.2-1.45x, the gated PixelCNN about 1.35x) and not slower for the others (MLP,
transformer, flow steps within the machine's noise), with the same first-step losses to float
rounding (``tests/test_xla_options.py`` checks a U-Net's loss and gradient). Adding YNNPACK's
elementwise fusion made the MLP and transformer steps 20-40% slower.

Per program (``jax.jit(..., compiler_options=...)``), so nothing global changes and other code
in the same process is unaffected. An option named in the environment's ``XLA_FLAGS`` is left
to it (its value is used instead); on other
backends no option is added.
"""
from __future__ import annotations

import os
from typing import Callable

import jax

CPU_COMPILER_OPTIONS: dict[str, object] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
}


def compiler_options(backend: str | None = None) -> dict[str, object]:
    """The options for a program compiled for ``backend`` (default: JAX's default backend):
    :data:`CPU_COMPILER_OPTIONS` on ``'cpu'`` minus those ``XLA_FLAGS`` sets; ``{}`` elsewhere."""
    if (backend or jax.default_backend()) != "cpu":
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in CPU_COMPILER_OPTIONS.items() if f"--{k}" not in flags}


def jit(fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(fn, **jit_kwargs)`` with :func:`compiler_options` (an explicit
    ``compiler_options`` argument replaces them)."""
    jit_kwargs.setdefault("compiler_options", compiler_options())
    return jax.jit(fn, **jit_kwargs)
