"""docs/tutorial.ipynb runs top to bottom (with few training steps) and is stored without outputs."""

import pathlib

import pytest

from ae_jax.data import fashion_mnist

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_notebook_is_stored_without_outputs():
  import nbformat

  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.skipif(
  not fashion_mnist.has_idx_files(fashion_mnist.DEBIAN_IDX_DIR),
  reason="the tutorial trains on Fashion-MNIST: apt-get install dataset-fashion-mnist",
)
def test_the_tutorial_runs_top_to_bottom(monkeypatch, tmp_path):
  import nbclient
  import nbformat

  monkeypatch.setenv("AE_JAX_TUTORIAL_STEPS", "40")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
    notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
  )
  client.execute()
  text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
  assert "codebook/perplexity" in text and "test/total_variation" in text and "eval_20.json" in text
  images = [
    o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
  ]
  assert images  # the reconstruction grid is shown
