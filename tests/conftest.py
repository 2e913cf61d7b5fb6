"""Test session setup: 8 fake CPU devices (before JAX is imported), fast-compiling XLA
flags, and a fresh data dir, so multi-device code is tested in-process."""
import os

# XLA flags of the test session: 8 fake CPU devices, and LLVM's lowest optimization level,
# which roughly halves compile time (tests here are compile-bound; they check values, not
# speed: the benchmarks under experiments/benchmarks run with XLA's defaults). Subprocess
# tests (resume, multiprocess, notebooks) set their own flags.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("GEN_JAX_TEST", "1")
# Every test reads and prepares datasets in a fresh directory, never the user's cache.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["GEN_JAX_DATA_DIR"] = tempfile.mkdtemp(prefix="gen_jax_tfds_")
atexit.register(shutil.rmtree, os.environ["GEN_JAX_DATA_DIR"], ignore_errors=True)

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (still run in CI)")


@pytest.fixture(scope="session")
def digits_data_dir():
    """A data dir with the embedded digits prepared once per session (never the home cache)."""
    d = os.environ["GEN_JAX_DATA_DIR"]
    from gen_jax.data.datasets import load_split

    load_split("digits", "train", str(d))
    return d
