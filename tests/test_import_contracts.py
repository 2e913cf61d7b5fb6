"""The import contracts of setup.cfg ([importlinter]) hold, and each one catches a violation.

``lint-imports`` runs from the venv's bin with the repo root as working directory (it reads
setup.cfg there). The violation tests copy ``gen_jax`` and setup.cfg to a temporary directory,
add one forbidden import, and check that lint-imports fails naming the broken contract.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT = pathlib.Path(sys.executable).parent / "lint-imports"

SHARED = "The shared layers (data, nn, distributions, metrics, train, evaluation, model, config, viz) import no family"
TRAINER = "No family imports gen_jax.train or gen_jax.evaluation"
EXPERIMENTS = "Nothing in gen_jax imports experiments"
LOW = "The shared layers are layered (trainer, metrics, nn, data | distributions | viz, model, config)"


def _lint(cwd) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: pip install -r requirements.txt (import-linter)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _normalized(text: str) -> str:
    """lint-imports wraps long contract names: compare with whitespace collapsed."""
    return " ".join(text.split())


def test_contracts_hold():
    res = _lint(ROOT)
    out = _normalized(res.stdout + res.stderr)
    assert res.returncode == 0, out
    for name in (SHARED, TRAINER, EXPERIMENTS, LOW):
        assert f"{name}" in out, out
    assert "BROKEN" not in out and "4 kept, 0 broken" in out, out


@pytest.fixture()
def tree(tmp_path):
    shutil.copytree(ROOT / "gen_jax", tmp_path / "gen_jax", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def _append(path: pathlib.Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


VIOLATIONS = [
    # (file, added line, broken contract, chain shown)
    ("gen_jax/data/__init__.py", "import gen_jax.latent  # noqa", SHARED, "gen_jax.data -> gen_jax.latent"),
    ("gen_jax/metrics/fid.py", "from gen_jax.diffusion import model  # noqa", SHARED,
     "gen_jax.metrics.fid -> gen_jax.diffusion.model"),
    ("gen_jax/flows/__init__.py", "import gen_jax.train.loop  # noqa", TRAINER, "gen_jax.flows -> gen_jax.train.loop"),
    ("gen_jax/latent/vae.py", "import gen_jax.evaluation  # noqa", TRAINER,
     "gen_jax.latent.vae -> gen_jax.evaluation"),
    ("gen_jax/nn/unet.py", "import experiments.registry  # noqa", EXPERIMENTS, "gen_jax.nn.unet -> experiments"),
    ("gen_jax/nn/unet.py", "import gen_jax.metrics.fid  # noqa", LOW, "gen_jax.nn.unet -> gen_jax.metrics.fid"),
    ("gen_jax/model.py", "import gen_jax.nn.unet  # noqa", LOW, "gen_jax.model -> gen_jax.nn.unet"),
    ("gen_jax/data/pipeline.py", "import gen_jax.distributions  # noqa", LOW,
     "gen_jax.data.pipeline -> gen_jax.distributions"),
]


@pytest.mark.parametrize("path,line,contract,chain", VIOLATIONS, ids=[v[0] + ":" + v[1].split("#")[0].strip()
                                                                       for v in VIOLATIONS])
def test_a_violation_breaks_its_contract(tree, path, line, contract, chain):
    _append(tree / path, line)
    res = _lint(tree)
    out = _normalized(res.stdout + res.stderr)
    assert res.returncode != 0, out
    assert f"{contract} BROKEN" in out, out
    assert "1 broken" in out, out
    assert chain in out, out


def test_an_undeclared_package_breaks_the_exhaustive_contract(tree):
    (tree / "gen_jax" / "newfamily").mkdir()
    (tree / "gen_jax" / "newfamily" / "__init__.py").write_text('"""A package no contract places."""\n')
    res = _lint(tree)
    out = _normalized(res.stdout + res.stderr)
    assert res.returncode != 0, out
    assert f"{SHARED} BROKEN" in out and "gen_jax.newfamily" in out, out
