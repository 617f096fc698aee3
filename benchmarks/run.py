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
OpenMP threads in particular slow down many times over on cores that other processes use). This module
is the command line; `orchestrate` starts the worker processes, `workers` is what they run, `measure`
the measurements, and `report` the ratios and the Markdown.

How each number is measured:
* step: the median over timed dispatches after the first (compile) and a warm-up one, each waited for
  with jax.block_until_ready, of the pmapped `train.train_steps` on one dispatch of the trainer's batches
  kept on the device, in ms per optimisation step (a dispatch of K = --steps-per-dispatch steps divided
  by K). Rounds (--rounds) of at most --steps steps, fewer when --budget seconds would be exceeded (at
  least 3 dispatches).
* loop: `loop.train_and_evaluate` on a temporary workdir with the config's input pipeline, logging at its
  log_every and asynchronous checkpoints at its checkpoint_every, without evaluators (keep_best off).
  The trainer logs examples_per_sec per log interval, the first dispatch (compilation) left out, and with
  more than one interval the first (with K > 1 it compiles the shorter dispatch that ends at a log step);
  the loop time per step is the summed time of the intervals (steps x batch / examples_per_sec) over their
  summed steps, the median over --loop-rounds runs. A run has --loop-steps steps, fewer (whole log intervals,
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
* PyTorch: each baseline (`benchmarks/torch_models.py`; the VQGAN's, `benchmarks/torch_vqgan.py`, is
  built from the config it is timed against) against its ae-jax counterpart (`measure.COMPARISONS`: the
  same batch, Adam, loss; `torch_models.thread_setup(--threads)`, while XLA uses every core it sees) in
  one worker, interleaved A B A B: each round times n steps of each (each synchronised), medians over all;
  the vqvae and vqgan ratios are against codebook_init=uniform, dead_code_threshold=0 (the baselines'
  codebook; vqgan: with the discriminator on from step 0), and the shipped config is timed in the same
  rounds. With --smoke a model's Spec.smoke overrides give it a tiny shape (vqgan_cifar10), both sides.
  The loop ratio interleaves trainer runs with a plain PyTorch loop of as many steps over the same records
  and preprocessing: a shuffled DataLoader in the main process, a step, the loss read every log_every,
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
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import orchestrate, workers
from benchmarks import report as reports

SMOKE = {"steps": 2, "rounds": 2, "budget": 0.0, "loop_steps": 6, "loop_rounds": 1, "matmul_size": 256}
SMOKE_INTERVALS = {"log_every": 2, "checkpoint_every": 4}


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


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.worker:
    workers.worker(args.worker)
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
    "machine": orchestrate.machine(),
    "settings": s,
    "notes": notes,
    "matmul_peak": None,
    **{key: {} for key in ("models", "devices", "comparisons", "gpu", "errors")},
  }
  sections = {"model": "models", "devices": "devices", "compare": "comparisons", "gpu": "gpu"}
  parallel = s["smoke"] and not s["gpu"]
  compared = [c.label for c in measure.COMPARISONS if c.model in s["models"]] if with_torch else []
  todo = orchestrate.jobs(s, compared)
  with (
    tempfile.TemporaryDirectory() as tmp,
    ThreadPoolExecutor(orchestrate.SMOKE_WORKERS if parallel else 1) as pool,
  ):
    cache = (os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp) if s["smoke"] else None  # one for all

    def one_job(job: dict[str, Any]) -> dict[str, Any]:
      start = time.perf_counter()
      result = orchestrate.run_job(job, s, out / "logs", cache)
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
  reports.derive(report, s)
  with open(out / "benchmark.json", "w") as f:
    json.dump(report, f, indent=1, default=lambda x: x.item() if hasattr(x, "item") else str(x))
  text = reports.markdown(report, s)
  (out / "benchmark.md").write_text(text)
  print(text)
  return 1 if report["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
