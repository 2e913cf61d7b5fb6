"""Every tutorial notebook executes headless from top to bottom without an error."""
import asyncio
import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_there_is_a_notebook_per_landed_family():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert {"latent_variable_models.ipynb", "diffusion_models.ipynb", "autoregressive_models.ipynb",
            "flow_models.ipynb"} <= names


def test_every_notebook_is_committed_with_outputs_and_linked_from_the_readme():
    readme = open(os.path.join(REPO, "README.md")).read()
    for path in NOTEBOOKS:
        rel = f"notebooks/{os.path.basename(path)}"
        assert f"]({rel})" in readme, f"README.md does not link {rel}"
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        executed = [c.get("execution_count") for c in code]
        assert code and executed == list(range(1, len(code) + 1)) and any(c.get("outputs") for c in code), \
            f"{rel}: not executed top to bottom in one kernel (execution counts {executed}); execute it before committing"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook executed at once, each in its own kernel (their compilations and training
    overlap on the cores instead of running one after another): ``{path: (notebook, error)}``."""

    async def run(path):
        nb = nbformat.read(path, as_version=4)
        name = os.path.splitext(os.path.basename(path))[0]
        # One CPU device inside the kernel, like a user's laptop; data in the test's data dir.
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "PYTHONPATH": REPO,
               "GEN_JAX_NOTEBOOK_WORKDIR": str(tmp_path_factory.mktemp(name))}
        client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}})
        try:
            await client.async_execute(env=env)
        except Exception as e:  # noqa: BLE001 - reported by the notebook's own test
            return nb, e
        return nb, None

    async def run_all():
        return await asyncio.gather(*(run(p) for p in NOTEBOOKS))

    return dict(zip(NOTEBOOKS, asyncio.run(run_all())))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, executed):
    nb, error = executed[path]
    assert error is None, f"{os.path.basename(path)}: {type(error).__name__}: {str(error)[-2000:]}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
