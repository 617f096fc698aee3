"""docs/tutorial.ipynb runs top to bottom as a user runs it (`jupyter execute` from docs/, few training
steps) and is stored without outputs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ae_jax.data import fashion_mnist

pytestmark = pytest.mark.slow  # starts processes: in make test, not in make test-fast

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_notebook_is_stored_without_outputs():
  """No outputs, and every cell has its own id (nbformat warns about cells without one on every read)."""
  import nbformat

  notebook = nbformat.read(NOTEBOOK, as_version=4)
  ids = [c.get("id") for c in json.loads(NOTEBOOK.read_text())["cells"]]  # as stored: nbformat.read adds them
  assert all(ids) and len(set(ids)) == len(ids), ids
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)


def _user_environment(tmp_path) -> dict[str, str]:
  """This process's environment, as a user's shell would have it, with the tutorial's few steps: relative
  PYTHONPATH entries (a developer's `PYTHONPATH=.`) made absolute so the kernel runs this checkout's code
  wherever it starts; nothing is added to the path."""
  env = {**os.environ, "AE_JAX_TUTORIAL_STEPS": "40", "TFDS_DATA_DIR": str(tmp_path / "tfds")}
  if env.get("PYTHONPATH"):
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
  return env


@pytest.mark.skipif(
  not fashion_mnist.has_idx_files(fashion_mnist.DEBIAN_IDX_DIR),
  reason="the tutorial trains on Fashion-MNIST: apt-get install dataset-fashion-mnist",
)
def test_the_tutorial_runs_top_to_bottom_with_jupyter_execute_in_docs(tmp_path):
  """`jupyter execute tutorial.ipynb` run from docs/ (the kernel starts there, as it does for a user), with
  this environment's jupyter and kernel: the installed package serves `experiments.configs`."""
  import nbformat

  jupyter = pathlib.Path(sys.executable).parent / "jupyter"
  executed = tmp_path / "executed"
  out = subprocess.run(
    [str(jupyter), "execute", NOTEBOOK.name, f"--output={executed}", "--timeout=300"],
    cwd=NOTEBOOK.parent,
    env=_user_environment(tmp_path),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  notebook = nbformat.read(executed.with_suffix(".ipynb"), as_version=4)
  text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
  assert "codebook/perplexity" in text and "test/total_variation" in text and "eval_20.json" in text
  assert "bits per code (uniform: 6)" in text  # the prior over the 64 codes, trained and sampled
  images = [
    o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
  ]
  assert images  # the reconstruction grid is shown
