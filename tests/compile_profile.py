"""Where the test suite's time goes: a pytest plugin that writes, per test, its wall time and the time JAX
spent tracing, lowering to MLIR and compiling (with the counts), from `jax.monitoring`'s duration events.

    rm -f /tmp/profile.jsonl
    PYTHONPATH=tests AE_JAX_COMPILE_PROFILE=/tmp/profile.jsonl .venv/bin/python -m pytest -p compile_profile \
      -n 2 -m "not slow and not training and not integration" tests
    .venv/bin/python tests/compile_profile.py /tmp/profile.jsonl   # totals, then the files by time

Each pytest-xdist worker appends its own lines to the file. A cache hit of JAX's persistent compilation
cache is traced and lowered but not compiled, so a warm run shows what the cache cannot save.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

import pytest

EVENTS = {
  "/jax/core/compile/jaxpr_trace_duration": "trace",
  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
  "/jax/core/compile/backend_compile_duration": "compile",
}
_current: dict[str, collections.Counter] = {}


def _listener(event: str, duration: float, **kwargs) -> None:
  name = EVENTS.get(event)
  if name is not None and _current:
    counts = next(iter(_current.values()))
    counts[f"{name}_s"] += duration
    counts[f"{name}_n"] += 1


def pytest_configure(config: pytest.Config) -> None:
  import jax.monitoring

  jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
  """Times the test's setup, call and teardown together (a module fixture counts for its first test)."""
  _current[item.nodeid] = collections.Counter()
  start = time.perf_counter()
  yield
  row = {"test": item.nodeid, "wall_s": time.perf_counter() - start, **_current.pop(item.nodeid)}
  path = os.environ.get("AE_JAX_COMPILE_PROFILE")
  if path:
    with open(path, "a") as f:
      f.write(json.dumps(row) + "\n")


def summarise(path: str, top: int = 25) -> str:
  """The totals over all tests, then the `top` files by wall time: seconds and counts of each phase."""
  rows = [json.loads(line) for line in open(path)]
  files: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for row in rows:
    files[row.pop("test").split("::")[0]].update(row)
  total = sum(files.values(), collections.Counter())

  def line(name: str, c: collections.Counter) -> str:
    phases = "  ".join(f"{p} {c[p + '_s']:6.1f} s ({c[p + '_n']:4.0f})" for p in EVENTS.values())
    return f"{name:44} wall {c['wall_s']:7.1f} s  {phases}"

  ranked = sorted(files.items(), key=lambda kv: -kv[1]["wall_s"])[:top]
  return "\n".join([line(f"all {len(rows)} tests", total), *(line(f, c) for f, c in ranked)])


if __name__ == "__main__":
  print(summarise(sys.argv[1]))
