"""The suite's orchestration: the worker jobs of a run, each in a fresh process with its own environment and
compilation cache, and the description of the machine."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMOKE_WORKERS = 2  # --smoke (no timings): worker processes at a time, as XLA compiles on one core


def jobs(s: dict[str, Any], compared: list[str]) -> list[dict[str, Any]]:
  """The worker jobs: the matmul peak, then one process per model and kind; with --smoke, the one-device
  items shared among SMOKE_WORKERS processes, and one process for --device-count."""
  one = [("model", m) for m in s["models"]] + [("compare", c) for c in compared]
  many = [("devices", m) for m in s["models"]] if s["device_count"] > 1 else []
  if s["gpu"]:
    one, many = [("gpu", m) for m in s["models"] + compared], []
  if s["smoke"]:
    shared = [("peak", "peak"), *one]
    groups = [(f"smoke-{i + 1}", shared[i::SMOKE_WORKERS]) for i in range(SMOKE_WORKERS)]
    groups.append(("smoke-devices", many))
  else:
    groups = [
      ("-".join(x) if x[0] != "peak" else "matmul_peak", [x]) for x in [("peak", "peak"), *one, *many]
    ]
  return [
    {"name": name, "devices": s["device_count"] if g[0][0] == "devices" else 1, "items": g}
    for name, g in groups
    if g
  ]


def worker_env(devices: int, s: dict[str, Any], cache: str) -> dict[str, str]:
  """The worker's environment: its compilation cache; on CPU, its number of simulated devices."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  if s["gpu"]:
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # PyTorch shares the GPU
    return env
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).split()
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  return dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def run_job(job: dict[str, Any], s: dict[str, Any], logs: Path, cache: str | None) -> dict[str, Any]:
  """Runs a job in a fresh worker process (its output in logs/<name>.log) with its own compilation cache,
  or `cache` when given. Returns {"items": {"kind:name": result}, "errors": {"kind:name": traceback}}."""
  with tempfile.TemporaryDirectory() as tmp:
    path, out, log = (
      os.path.join(tmp, "job.json"),
      os.path.join(tmp, "result.json"),
      logs / f"{job['name']}.log",
    )
    with open(path, "w") as f:
      json.dump({**job, "settings": s, "out": out}, f)
    with open(log, "w") as f:
      cmd, env = (
        [sys.executable, "-m", "benchmarks.run", "--worker", path],
        worker_env(job["devices"], s, cache or tmp),
      )
      rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc or not os.path.exists(out):
      why = f"worker exited with {rc} ({log}):\n{log.read_text()[-2000:]}"
      return {"items": {}, "errors": {f"{kind}:{item}": why for kind, item in job["items"]}}
    with open(out) as f:
      return json.load(f)


def machine() -> dict[str, Any]:
  """The CPUs, platform and package versions (read without importing the packages)."""

  def version(name: str) -> str | None:
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None

  return {
    "cpu_count": os.cpu_count(),
    "cpus_available": len(os.sched_getaffinity(0)),
    "platform": platform.platform(),
    "processor": platform.processor() or platform.machine(),
    "python": platform.python_version(),
    "load_average_start": os.getloadavg(),
    **{name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "grain")},
  }
