r"""One side-by-side benchmark suite: every shipped model family's step, loop, compile, memory, FLOPs and
input pipeline on this machine, and the PyTorch baselines measured interleaved with their ae-jax twins.

    python -m benchmarks.run                      # every model on this CPU
    python -m benchmarks.run --models mlp_ae,conv_ae --steps-per-dispatch 1,10 --device-count 8 --out DIR
    python -m benchmarks.run --smoke              # every code path, a few steps, no timing claims
    python -m benchmarks.run --gpu                # an NVIDIA GPU: ae-jax vs PyTorch eager on CUDA

Writes DIR/benchmark.md (also printed) and DIR/benchmark.json (every number, the date, the machine and
the command line); DIR/logs/ holds each worker's output. Models (`measure.MODELS`) are the shipped configs
of experiments/configs/, built as the trainer builds them (`experiment.setup`) with the step the trainer
dispatches (`experiment.pmapped_train_steps`).
Each model is measured in a fresh worker process with its own persistent compilation cache, so its first
dispatch compiles and the trainer runs after it reuse that; --smoke shares its processes and one cache.
Measure on a quiet machine: the JSON records the load average at the start and the end (PyTorch's
OpenMP threads in particular slow down many times over on cores that other processes use).

How each number is measured:
* step: the median over timed dispatches after the first (compile) and a warm-up one, each waited for
  with jax.block_until_ready, of the pmapped `train.train_steps` on one dispatch of the trainer's batches
  kept on the device, in ms per optimisation step (a dispatch of K = --steps-per-dispatch steps divided
  by K). Rounds (--rounds) of at most --steps steps, fewer when --budget seconds would be exceeded (at
  least 3 dispatches).
* loop: `loop.train_and_evaluate` on a temporary workdir with the config's input pipeline, logging at its
  log_every and asynchronous checkpoints at its checkpoint_every, without evaluators (keep_best off).
  The trainer logs examples_per_sec per log interval, the first dispatch (compilation) left out; the loop
  time per step is the summed time of the intervals (steps x batch / examples_per_sec) over their summed
  steps, the median over --loop-rounds runs. A run has --loop-steps steps, fewer (whole log intervals,
  at least 3 dispatches) when --budget would be exceeded; a checkpoint save counts only when the run
  passes one before its last step (the JSON says how many: checkpoints_timed).
* data: the real dataset when it opens locally (prepared once by the trainer's own loaders), else a
  stand-in with the same example shape and dtype (`synthetic` images with the config's scale and
  binarisation, or random examples registered as `benchmark_standin`); the data column says which.
* compile: seconds of the first dispatch (compilation plus one step). FLOPs per step: the compiled K=1
  step's cost_analysis()["flops"]. Matmul peak: the median of --matmul-repeats jnp.dot of two float32
  matrices of --matmul-size (2048), 2 n^3 / time; a model's fraction is FLOPs/step / step time / peak.
* peak host memory: resource.getrusage(RUSAGE_SELF).ru_maxrss of the model's fresh worker process at its
  end (step, pipeline and trainer runs; PyTorch is never imported there).
* input pipeline: batches per second of `pipeline.train_batches` + `parallel.stack_steps` + placement on
  the devices (waited for), alone, and its ratio to the step rate (above 1: the pipeline keeps up).
* PyTorch: each baseline (`benchmarks/torch_models.py`) against its ae-jax counterpart
  (`measure.COMPARISONS`: the same batch, Adam, loss; `torch_models.thread_setup(--threads)`, while XLA
  uses every core it sees) in one worker, interleaved A B A B: each round times n steps of each (each
  synchronised), medians over all; the vqvae ratio is against codebook_init=uniform, dead_code_threshold=0
  (the baseline's codebook), and the shipped config is timed in the same rounds. The loop ratio
  interleaves trainer runs with a plain PyTorch loop of as many steps over the same records and
  preprocessing: a shuffled DataLoader in the main process, a step, the loss read every log_every,
  torch.save of model and optimizer every checkpoint_every; ms per step after its first.
* --device-count N: the step (K=1) in a worker with N simulated CPU devices (XLA_FLAGS set before jax is
  imported) at the same global batch; pmap overhead = its time / the one-device time - 1.
* --gpu: every model at its config batch and at --gpu-batches (out of memory is reported), the step, its
  images/s and its share of the loop's time per step, and the baselines in PyTorch eager on CUDA. Without
  tensorflow_datasets (ae_jax imports it only to read tfds data) the data is the stand-in.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"steps": 2, "rounds": 2, "budget": 0.0, "loop_steps": 6, "loop_rounds": 1, "matmul_size": 256}
SMOKE_INTERVALS = {"log_every": 2, "checkpoint_every": 4}
COMPARE_COLUMNS = tuple(
  "baseline|ae-jax config|batch|threads|JAX step ms|PyTorch step ms|PyTorch/JAX step|JAX loop ms|"
  "PyTorch loop ms|PyTorch/JAX loop".split("|")
)
GPU_COLUMNS = tuple(
  "model|data|batch|JAX step ms|JAX img/s|loop ms|step ÷ loop|PyTorch ms|PyTorch/JAX".split("|")
)
SMOKE_WORKERS = 2  # --smoke (no timings): worker processes at a time, as XLA compiles on one core


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="", help="comma-separated names (default: all)")
  p.add_argument("--steps", type=int, default=20, help="most timed steps per round")
  p.add_argument("--rounds", type=int, default=5, help="rounds of timed steps (A B A B with PyTorch)")
  p.add_argument("--budget", type=float, default=15.0, help="seconds of timed work per measurement")
  p.add_argument("--loop-steps", type=int, default=300, help="most steps of a timed trainer run")
  p.add_argument("--loop-rounds", type=int, default=2, help="timed trainer runs per model")
  p.add_argument("--steps-per-dispatch", default="1", help="K values, e.g. 1,10")
  p.add_argument("--device-count", type=int, default=1, help="also time the step on N simulated devices")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch threads")
  p.add_argument("--data", choices=("auto", "real", "synthetic"), help="default: auto (smoke: synthetic)")
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--matmul-repeats", type=int, default=10)
  p.add_argument("--out", default="runs/benchmark", help="output folder")
  p.add_argument("--smoke", action="store_true", help="a few steps per model; no timing claims")
  p.add_argument("--gpu", action="store_true", help="NVIDIA GPU: ae-jax vs PyTorch eager on CUDA")
  p.add_argument("--gpu-batches", default="256,1024", help="--gpu's large batches (beside the config's)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def settings(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
  """The options every worker reads (with --smoke, its small values)."""
  models = [m for m in args.models.split(",") if m] or names
  if set(models) - set(names):
    raise SystemExit(f"error: unknown models {sorted(set(models) - set(names))}; choose from {names}")
  s = {
    **{k: getattr(args, k) for k in ("steps", "rounds", "budget", "loop_steps", "loop_rounds", "threads")},
    **{k: getattr(args, k) for k in ("device_count", "matmul_size", "matmul_repeats", "smoke", "gpu")},
    "models": models,
    "ks": [int(k) for k in args.steps_per_dispatch.split(",")],
    "data": args.data or ("synthetic" if args.smoke else "auto"),
    "gpu_batches": [int(b) for b in args.gpu_batches.split(",") if b],
    "num_train": 4096,
    "batch": None,
    "intervals": None,
  }
  if args.smoke:
    s.update(SMOKE, matmul_repeats=3, num_train=256, batch=2 * args.device_count, intervals=SMOKE_INTERVALS)
  return s


def model_columns(s: dict[str, Any]) -> list[str]:
  """The model table's columns under these settings."""
  cols = ["model", "config", "data", "batch", "params", "compile s"]
  cols += [f"step ms (K={k})" for k in s["ks"]] + [f"loop ms (K={k})" for k in s["ks"]]
  cols += [
    "input",
    "H2D bytes/step",
    "loop ÷ step",
    "host-input loop ms",
    "pipeline batch/s",
    "pipeline ÷ step",
  ]
  cols += ["GFLOP/step", "% matmul peak", "peak RSS MB"]
  return cols + ([f"step ms ({s['device_count']} dev)", "pmap overhead"] if s["device_count"] > 1 else [])


# ----------------------------------------------------------------------------- the workers


def _config(name: str, s: dict[str, Any], cmp: Any = None, **overrides: Any) -> tuple[Any, str]:
  """A model's shipped config (or a comparison's), with the smoke batch and intervals; (config, data used)."""
  from benchmarks import measure

  config = measure.comparison_config(cmp) if cmp else measure.shipped_config(name, overrides=overrides)
  if s["batch"]:
    config.batch_size = s["batch"]
  for key, value in (s["intervals"] or {}).items():
    config[key] = value
  shape = cmp.shape if cmp else measure.MODELS[name].shape
  return config, measure.resolve_data(config, s["data"], s["num_train"], shape)


def _with(config: Any, key: str, value: Any) -> Any:
  """A copy of `config` with the dotted `key` set to `value`."""
  import copy

  from benchmarks import measure

  c = copy.deepcopy(config)
  measure.set_path(c, key, value)
  return c


def _timed_loops(bench: Any, step_ms: float, k: int, s: dict[str, Any]) -> list[dict[str, Any]]:
  """--loop-rounds trainer runs of the bench's config, as long as --budget allows (smoke: --loop-steps)."""
  from benchmarks import measure

  steps = measure.loop_steps(step_ms / 1e3, s["budget"], s["loop_steps"], bench.config.log_every, k)
  steps = max(3 * k, -(-s["loop_steps"] // k) * k) if s["smoke"] else steps
  return [measure.time_loop(measure.loop_config(bench.config, steps, k)) for _ in range(s["loop_rounds"])]


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
  out = {"ms": statistics.median(r["ms"] for r in runs), "runs": runs}
  if "input" in runs[0]:  # trainer runs: which input path, and its host-to-device bytes per step
    out["input"] = runs[0]["input"]
    out["input_bytes_per_step"] = statistics.median(r["input_bytes_per_step"] for r in runs)
  return out


def run_model(name: str, s: dict[str, Any]) -> dict[str, Any]:
  """Every single-model number of the shipped config `name` (in a fresh process: its peak memory)."""
  from benchmarks import measure

  config, used = _config(name, s)
  bench = measure.build(config)
  spec = measure.MODELS[name]
  flags = [f"--config.{k}={v}" for k, v in spec.overrides]
  label = " ".join([f"{spec.module}.py" + (f":{spec.arg}" if spec.arg else ""), *flags])
  out = {"config": label, "data": used, "batch": config.batch_size, "params": bench.num_params}
  out.update(step={}, loop={})
  for k in s["ks"]:
    out["step"][str(k)] = step = measure.time_step(bench, k, s["steps"], s["rounds"], s["budget"])
    out["loop"][str(k)] = _median(_timed_loops(bench, step["ms"], k, s))
  host = measure.build(_with(config, "data.on_device", "false"))  # the host pipeline's loop, beside it
  out["loop_host"] = _median(_timed_loops(host, out["step"][str(s["ks"][0])]["ms"], s["ks"][0], s))
  out["pipeline"] = measure.time_pipeline(bench, s["ks"][0], s["steps"], s["rounds"], s["budget"])
  out["peak_rss_mb"] = measure.peak_rss_mb()
  return out


def run_devices(name: str, s: dict[str, Any]) -> dict[str, Any]:
  """The K=1 step of `name` on this worker's simulated devices, at the same global batch."""
  import jax

  from benchmarks import measure

  config, used = _config(name, s)
  if config.batch_size % jax.local_device_count():
    return {"skipped": f"batch {config.batch_size} does not split over {jax.local_device_count()} devices"}
  step = measure.time_step(measure.build(config), 1, s["steps"], s["rounds"], s["budget"])
  return {"devices": jax.local_device_count(), "data": used, "step": step}


def run_compare(label: str, s: dict[str, Any]) -> dict[str, Any]:
  """A PyTorch baseline and its ae-jax counterpart (and the shipped config), interleaved A B A B."""
  from benchmarks import measure, torch_models

  cmp = next(c for c in measure.COMPARISONS if c.label == label)
  threads = torch_models.thread_setup(s["threads"])
  configs = {"counterpart": _config(cmp.model, s, cmp)}
  if cmp.shipped_too:
    configs["shipped"] = _config(cmp.model, s, batch_size=cmp.batch)
  measure.check_counterpart(configs["counterpart"][0], cmp)
  benches = {v: measure.build(c) for v, (c, _) in configs.items()}
  timers = {v: measure.StepTimer(b, 1) for v, b in benches.items()}
  ones = {v: [t.call(), t.call()][1] for v, t in timers.items()}  # compile, then one warm step
  bench = benches["counterpart"]
  baseline = torch_models.make(cmp.baseline, bench.config.batch_size)
  ones["torch"] = measure.time_torch(baseline, 2)[1]
  plans = {v: measure.plan(one, s["budget"], s["rounds"], s["steps"]) for v, one in ones.items()}
  samples: dict[str, list] = {v: [] for v in ones}
  for _ in range(min(r for r, _ in plans.values())):
    for v, (_, n) in plans.items():
      samples[v].append(measure.time_torch(baseline, n) if v == "torch" else timers[v].round(n))
  jax_loops, torch_loops = [], []
  for _ in range(s["loop_rounds"]):
    jax_loops += _timed_loops(bench, 1e3 * ones["counterpart"], 1, {**s, "loop_rounds": 1})
    torch_loops.append(measure.time_torch_loop(baseline, bench, jax_loops[-1]["timed_steps"] + 1))
  c = bench.config
  return {
    "baseline": cmp.baseline,
    "batch": c.batch_size,
    "configs": {v: {"data": used, **cfg.to_dict()} for v, (cfg, used) in configs.items()},
    "threads": {"torch": list(threads), "jax": "every core XLA sees"},
    "params": {"jax": bench.num_params, "torch": baseline.num_params},
    "step": {v: measure.summary_ms(x) for v, x in samples.items()},
    "loop": {"jax": _median(jax_loops), "torch": _median(torch_loops)},
  }


def run_gpu(entry: str, s: dict[str, Any]) -> dict[str, Any]:
  """A model (or a baseline's counterpart and the baseline on CUDA) at its batch and --gpu-batches."""
  from benchmarks import measure

  cmp = next((c for c in measure.COMPARISONS if c.label == entry), None)
  rows = []
  shipped = (measure.comparison_config(cmp) if cmp else measure.shipped_config(entry)).batch_size
  for batch in dict.fromkeys([shipped, *s["gpu_batches"]]):
    row: dict[str, Any] = {"batch": batch}
    try:
      config, row["data"] = _config(entry, s, cmp)
      config.batch_size = batch
      bench = measure.build(config)
      row["step"] = measure.time_step(bench, 1, s["steps"], s["rounds"], s["budget"])
      row["loop"], row["loop_kind"] = _median(_timed_loops(bench, row["step"]["ms"], 1, s)), "trainer"
      if cmp:
        from benchmarks import torch_models

        baseline = torch_models.make(cmp.baseline, batch)
        baseline.model.cuda()
        baseline.inputs = baseline.inputs.cuda()
        measure.time_torch(baseline, 2)
        row["torch_step"] = measure.summary_ms([measure.time_torch(baseline, s["steps"])])
    except Exception as e:  # noqa: BLE001 - a batch too large for the GPU is reported, not fatal
      if not re.search(r"RESOURCE_EXHAUSTED|out of memory", str(e), re.IGNORECASE):
        raise
      row["error"] = "out of memory"
    rows.append(row)
  return {"rows": rows}


def run_peak(_: str, s: dict[str, Any]) -> dict[str, Any]:
  """The matmul peak and the devices jax sees (--gpu: fails clearly without a GPU)."""
  import jax

  from benchmarks import measure

  if s["gpu"] and jax.default_backend() != "gpu":
    raise SystemExit(
      f"--gpu needs an NVIDIA GPU that jax can use, but jax sees {jax.devices()} (backend "
      f"'{jax.default_backend()}'); run it on a machine with one and jax[cuda12] or jax[cuda13] installed"
    )
  if s["gpu"] and importlib.util.find_spec("torch"):
    import torch

    if not torch.cuda.is_available():
      raise SystemExit("--gpu: this torch build sees no CUDA device; install a CUDA build of torch")
  out = measure.matmul_peak(s["matmul_size"], s["matmul_repeats"])
  return {**out, "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}


def worker(path: str) -> None:
  """Runs one job file's items ([kind, name] pairs) in this process and writes its result file."""
  with open(path) as f:
    job = json.load(f)
  s = job["settings"]
  run = {"peak": run_peak, "model": run_model, "devices": run_devices, "compare": run_compare, "gpu": run_gpu}
  result: dict[str, Any] = {"items": {}, "errors": {}}
  for kind, item in job["items"]:
    try:
      result["items"][f"{kind}:{item}"] = run[kind](item, s)
    except Exception:  # noqa: BLE001 - one failing model is reported, the others still run
      result["errors"][f"{kind}:{item}"] = traceback.format_exc()
      print(result["errors"][f"{kind}:{item}"], file=sys.stderr)
  with open(job["out"], "w") as f:
    json.dump(result, f, indent=1, default=float)


# ----------------------------------------------------------------------------- orchestration


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


# ----------------------------------------------------------------------------- the report


def derive(report: dict[str, Any], s: dict[str, Any]) -> None:
  """Adds the ratios: FLOP rate and peak fraction, loop and pipeline against the step, pmap overhead, and
  PyTorch/JAX."""
  peak, k = (report["matmul_peak"] or {}).get("flops_per_s"), str(s["ks"][0])
  for name, m in report["models"].items():
    step_s, one = m["step"][k]["ms"] / 1e3, m["step"].get("1", {})
    if one.get("flops"):
      m["flops_per_s"] = one["flops"] / (one["ms"] / 1e3)
      m["fraction_of_peak"] = m["flops_per_s"] / peak if peak else None
    m["loop_over_step"] = m["loop"][k]["ms"] / 1e3 / step_s
    m["pipeline_over_step"] = m["pipeline"]["batches_per_s"] * step_s
    d = report["devices"].get(name, {})
    if "step" in d and one:
      m["pmap"] = {
        "devices": d["devices"],
        "ms": d["step"]["ms"],
        "overhead": d["step"]["ms"] / one["ms"] - 1,
      }
  for c in report["comparisons"].values():
    c["ratio_step"] = {v: c["step"]["torch"]["ms"] / x["ms"] for v, x in c["step"].items() if v != "torch"}
    c["ratio_loop"] = c["loop"]["torch"]["ms"] / c["loop"]["jax"]["ms"]


def _f(x: Any) -> str:
  if isinstance(x, float):
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
  return "—" if x is None else str(x)


def _table(columns: list[str] | tuple[str, ...], rows: list[list[Any]]) -> list[str]:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  return [*lines, *("| " + " | ".join(_f(x) for x in row) + " |" for row in rows), ""]


def model_row(name: str, m: dict[str, Any], s: dict[str, Any]) -> list[Any]:
  ks, k, flops, frac = (
    [str(k) for k in s["ks"]],
    str(s["ks"][0]),
    m["step"].get("1", {}).get("flops"),
    m.get("fraction_of_peak"),
  )
  row = [name, m["config"], m["data"], m["batch"], m["params"], m["step"][k]["compile_s"]]
  row += [m["step"][x]["ms"] for x in ks] + [m["loop"][x]["ms"] for x in ks]
  loop = m["loop"][k]
  row += [loop.get("input"), loop.get("input_bytes_per_step"), m["loop_over_step"], m["loop_host"]["ms"]]
  row += [m["pipeline"]["batches_per_s"], m["pipeline_over_step"]]
  row += [flops / 1e9 if flops else None, 100 * frac if frac else None, m["peak_rss_mb"]]
  pmap = m.get("pmap")
  return row + (
    [pmap and pmap["ms"], pmap and f"{100 * pmap['overhead']:+.0f}%"] if s["device_count"] > 1 else []
  )


def compare_rows(label: str, c: dict[str, Any]) -> list[list[Any]]:
  rows = []
  for v, ratio in c["ratio_step"].items():
    step = [c["step"][v]["ms"], c["step"]["torch"]["ms"], ratio]
    loop = (
      [c["loop"]["jax"]["ms"], c["loop"]["torch"]["ms"], c["ratio_loop"]]
      if v == "counterpart"
      else [None] * 3
    )
    rows.append([label, v, c["batch"], c["threads"]["torch"][0], *step, *loop])
  return rows


def gpu_rows(entry: str, g: dict[str, Any]) -> list[list[Any]]:
  rows = []
  for r in g["rows"]:
    if "error" in r:
      rows.append([entry, r.get("data"), r["batch"], r["error"], *[None] * 5])
      continue
    step, loop, torch_ms = r["step"]["ms"], r["loop"]["ms"], r.get("torch_step", {}).get("ms")
    ratio = torch_ms / step if torch_ms else None
    rows.append(
      [entry, r["data"], r["batch"], step, r["batch"] / step * 1e3, loop, step / loop, torch_ms, ratio]
    )
  return rows


def markdown(report: dict[str, Any], s: dict[str, Any]) -> str:
  """The report as markdown: the machine, the model table, the PyTorch (or GPU) table, the notes."""
  m, peak = report["machine"], report["matmul_peak"]
  lines = ["# ae-jax benchmarks", "", f"{report['date']} · `{report['command']}`", ""]
  lines += [
    f"{m['cpus_available']} of {m['cpu_count']} CPUs ({m['processor']}), {m['platform']}; "
    f"python {m['python']}, jax {m['jax']}, flax {m['flax']}, torch {m['torch'] or 'not installed'}",
    "",
  ]
  if s["smoke"]:
    lines += ["**Smoke run: a few steps per model at a tiny batch. No timing claims.**", ""]
  if peak:
    lines += [
      f"float32 matmul peak ({peak['n']}², {peak['backend']}): {_f(peak['flops_per_s'] / 1e9)} GFLOP/s",
      "",
    ]
  if report["models"]:
    rows = [model_row(n, x, s) for n, x in report["models"].items()]
    lines += ["## Models (ms per optimisation step)", "", *_table(model_columns(s), rows)]
  if report["comparisons"]:
    rows = [r for label, c in report["comparisons"].items() for r in compare_rows(label, c)]
    lines += ["## PyTorch baselines, interleaved (ms per step)", "", *_table(COMPARE_COLUMNS, rows)]
  if report["gpu"]:
    rows = [r for e, g in report["gpu"].items() for r in gpu_rows(e, g)]
    lines += ["## GPU (ms per step)", "", *_table(GPU_COLUMNS, rows)]
  notes = report["notes"] + [f"FAILED {item} (traceback in benchmark.json)" for item in report["errors"]]
  return "\n".join([*lines, "## Notes", "", *(f"- {n}" for n in notes)]) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.worker:
    worker(args.worker)
    return 0
  from benchmarks import measure

  s = settings(args, list(measure.MODELS))
  out, with_torch = Path(args.out), importlib.util.find_spec("torch") is not None
  (out / "logs").mkdir(parents=True, exist_ok=True)
  notes = [
    "step: median of dispatches waited for with jax.block_until_ready; loop: the trainer's logged "
    "examples_per_sec (compilation excluded); compile: the first dispatch; peak RSS: getrusage max RSS of "
    "the model's worker process; the method of each number: benchmarks/run.py",
    f"PyTorch threads: {s['threads']}; JAX: every core XLA sees",
  ]
  notes = (["smoke run: no timing claims"] if s["smoke"] else []) + notes
  if not with_torch:
    notes.append("PyTorch is not installed (pip install torch==2.13.0): the baselines were skipped")
  report: dict[str, Any] = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "command": shlex.join(["python", "-m", "benchmarks.run", *argv]),
    "smoke": s["smoke"],
    "timing_claims": not s["smoke"],
    "machine": machine(),
    "settings": s,
    "notes": notes,
    "matmul_peak": None,
    **{key: {} for key in ("models", "devices", "comparisons", "gpu", "errors")},
  }
  sections = {"model": "models", "devices": "devices", "compare": "comparisons", "gpu": "gpu"}
  parallel = s["smoke"] and not s["gpu"]
  compared = [c.label for c in measure.COMPARISONS if c.model in s["models"]] if with_torch else []
  todo = jobs(s, compared)
  with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(SMOKE_WORKERS if parallel else 1) as pool:
    cache = (os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp) if s["smoke"] else None  # one for all

    def one_job(job: dict[str, Any]) -> dict[str, Any]:
      start = time.perf_counter()
      result = run_job(job, s, out / "logs", cache)
      print(f"{job['name']}: {time.perf_counter() - start:.0f} s", flush=True)
      return result

    first = one_job(todo[0]) if s["gpu"] else None  # the GPU check: nothing else runs without one
    if first is not None and "peak:peak" in first["errors"]:
      raise SystemExit(f"error: {first['errors']['peak:peak'].strip().splitlines()[-1]}")
    results = pool.map(one_job, todo[1:] if first is not None else todo)
    for result in [first, *results] if first is not None else results:
      report["errors"].update(result["errors"])
      for key, value in result["items"].items():
        kind, name = key.split(":", 1)
        if kind == "peak":
          report["matmul_peak"] = value
        else:
          report[sections[kind]][name] = value
  report["machine"]["load_average_end"] = os.getloadavg()
  derive(report, s)
  with open(out / "benchmark.json", "w") as f:
    json.dump(report, f, indent=1, default=lambda x: x.item() if hasattr(x, "item") else str(x))
  text = markdown(report, s)
  (out / "benchmark.md").write_text(text)
  print(text)
  return 1 if report["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
