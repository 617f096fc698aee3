"""What the suite's worker processes run (`python -m benchmarks.run --worker JOB.json`): one function per
kind of job item, each returning the numbers of one model, device count, comparison or GPU entry (the
method of each number: benchmarks/run.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import sys
import traceback
from typing import Any


def _config(name: str, s: dict[str, Any], cmp: Any = None, **overrides: Any) -> tuple[Any, str]:
  """A model's shipped config (or a comparison's), with the smoke batch, intervals and shape (Spec.smoke);
  (config, data used)."""
  from benchmarks import measure

  config = measure.comparison_config(cmp) if cmp else measure.shipped_config(name, overrides=overrides)
  for key, value in measure.MODELS[cmp.model if cmp else name].smoke if s["smoke"] else ():
    measure.set_path(config, key, value)  # a tiny shape of the same model (no timing claims)
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
  tiny = s["smoke"] and measure.MODELS[cmp.model].smoke  # then the full-size config is the one checked
  measure.check_counterpart(measure.comparison_config(cmp) if tiny else configs["counterpart"][0], cmp)
  benches = {v: measure.build(c) for v, (c, _) in configs.items()}
  timers = {v: measure.StepTimer(b, 1) for v, b in benches.items()}
  ones = {v: [t.call(), t.call()][1] for v, t in timers.items()}  # compile, then one warm step
  bench = benches["counterpart"]
  baseline = measure.make_baseline(cmp, bench.config)
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
        baseline = measure.make_baseline(cmp, config)
        if hasattr(baseline, "to"):  # the VQGAN's: both players, LPIPS and the weight EMA
          baseline.to("cuda")
        else:
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
