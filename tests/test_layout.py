"""The package layout shows the architecture: a short top level, packages by role, and imports that only run
down the layers (a lower package never imports a higher one, not even inside a function)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "ae_jax"

# Lowest first: a package may import the packages before it in this list and none after it.
LAYERS = (
  "core",  # errors, registries, console, device placement, the workdir, image grids
  "losses",  # per-example loss terms and batch-level divergences
  "quantizers",
  "models",
  "data",
  "training",  # the pure step, train state, checkpoints, optimizer, metrics log
  "metrics",  # image, sample and feature-space measures and their networks
  "anomaly",
  "generation",  # stage one, priors over codes, samplers
  "evaluators",
  "runner",  # the experiment's config, the training loop, the inspector
)


def _imported_packages(path: pathlib.Path) -> set[tuple[str, int]]:
  """(ae_jax package, line) for every import of another ae_jax package in `path`, at any depth."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names: list[str] = []
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ae_jax":
      parts = node.module.split(".")
      names = [a.name for a in node.names] if len(parts) == 1 else [parts[1]]
    elif isinstance(node, ast.Import):
      names = [a.name.split(".")[1] for a in node.names if a.name.startswith("ae_jax.")]
    found.update((name, node.lineno) for name in names)
  return found


def test_the_top_level_is_a_short_list_of_packages():
  entries = sorted(p.name for p in ROOT.iterdir() if p.name != "__pycache__")
  assert len(entries) <= 12, entries
  assert [e for e in entries if e.endswith(".py")] == ["__init__.py"], entries
  assert sorted(e for e in entries if e != "__init__.py") == sorted(LAYERS)


def test_imports_only_run_down_the_layers():
  rank = {name: i for i, name in enumerate(LAYERS)}
  upward = []
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT).parts
    if len(parts) < 2:
      continue
    for target, line in _imported_packages(path):
      if target in rank and rank[target] > rank[parts[0]]:
        upward.append(f"{path.relative_to(ROOT)}:{line} imports ae_jax.{target}")
  assert not upward, "\n".join(sorted(upward))
