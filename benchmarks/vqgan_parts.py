r"""Where the VQGAN step's time goes, ae-jax against PyTorch: the step with and without its LPIPS term, and
LPIPS (VGG) alone, forward and forward + backward, at the step's batch.

    python -m benchmarks.vqgan_parts                       # batch 32 at 32x32, 3 rounds
    python -m benchmarks.vqgan_parts --rounds 5 --budget 8 --out DIR

In one process, interleaved round by round (A B A B, each timed piece `--budget` / `--rounds` seconds per
round, medians over all samples):

* ae-jax: the vqgan comparison's config (`benchmarks.measure.COMPARISONS`, as `benchmarks.run` times it)
  built as the trainer builds it; the same without the `lpips` term (removed from config.loss, not
  weighted 0: a 0-weighted term is still computed, reported); `lpips.distance` on (x, x_rec) alone,
  jitted, forward, and forward + the gradient with respect to x_rec (what the step adds for the term).
* PyTorch: `torch_vqgan`'s step from the same config, the same with Options(lpips=0) (no LPIPS call),
  TorchLPIPS forward (with autograd recording, as inside the step), and forward + backward to x_rec.

Shares are of each side's own full step. Writes DIR/vqgan_parts.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import report as report_module


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
  out = []
  for _ in range(n):
    start = time.perf_counter()
    fn()
    out.append(time.perf_counter() - start)
  return out


def measure_parts(
  rounds: int, budget: float, threads: int, data: str = "auto", batch: int | None = None
) -> dict[str, Any]:
  """The pieces' times in ms (medians), each side's shares of its step, and what was timed."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from ae_jax.metrics import lpips
  from benchmarks import measure, torch_models, torch_vqgan

  threads_used = torch_models.thread_setup(threads)
  cmp = next(c for c in measure.COMPARISONS if c.label == "vqgan")
  config = measure.comparison_config(cmp)
  config.batch_size = batch or config.batch_size
  used = measure.resolve_data(config, data, 4096, cmp.shape)
  measure.check_counterpart(measure.comparison_config(cmp), cmp)
  without = copy.deepcopy(config)
  del without.loss["lpips"]
  timers = {"jax step": measure.StepTimer(measure.build(config), 1)}
  timers["jax step without lpips"] = measure.StepTimer(measure.build(without), 1)

  batch = config.batch_size
  rng = np.random.default_rng(0)
  x, y = (jnp.asarray(rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)) for _ in range(2))
  params = lpips.load_params("vgg")
  forward = jax.jit(lambda p, a, b: lpips.distance(p, a, b).mean())
  backward = jax.jit(jax.value_and_grad(lambda b, p, a: lpips.distance(p, a, b).mean()))

  options = torch_vqgan.options_from_config(config, measure.example_shape(config.data, cmp.shape))
  baselines = {
    "torch step": torch_vqgan.make(batch, options),
    "torch step without lpips": torch_vqgan.make(batch, dataclasses.replace(options, lpips=0.0)),
  }
  lp = baselines["torch step"].lpips
  tx, ty = (torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy()) for a in (x, y))
  ty.requires_grad_(True)

  def torch_backward() -> None:
    ty.grad = None
    lp(tx, ty).mean().backward()

  pieces: dict[str, Callable[[], Any]] = {
    **{k: t.call for k, t in timers.items()},
    "jax lpips forward": lambda: jax.block_until_ready(forward(params, x, y)),
    "jax lpips forward+backward": lambda: jax.block_until_ready(backward(y, params, x)),
    **{k: (lambda b=b: float(b.step())) for k, b in baselines.items()},
    "torch lpips forward": lambda: float(lp(tx, ty).mean().detach()),
    "torch lpips forward+backward": torch_backward,
  }
  ones = {k: _timed(fn, 2)[1] for k, fn in pieces.items()}  # compile / warm up, then one timed
  n = {k: max(2, int(budget / rounds / one)) for k, one in ones.items()}
  samples: dict[str, list[float]] = {k: [] for k in pieces}
  for _ in range(rounds):
    for k, fn in pieces.items():
      samples[k] += _timed(fn, n[k])
  ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
  shares = {k: v / ms[f"{k.split()[0]} step"] for k, v in ms.items() if k not in ("jax step", "torch step")}
  return {
    "ms": ms,
    "share_of_step": shares,
    "samples": {k: len(v) for k, v in samples.items()},
    "torch_over_jax_step": ms["torch step"] / ms["jax step"],
    "batch": batch,
    "data": used,
    "threads": {"torch": list(threads_used), "jax": "every core XLA sees"},
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def markdown(result: dict[str, Any]) -> str:
  lines = [
    "| piece | ae-jax ms | share of ae-jax step | PyTorch ms | share of PyTorch step |",
    "|---|---|---|---|---|",
  ]
  ms, shares = result["ms"], result["share_of_step"]
  for piece in ("step", "step without lpips", "lpips forward", "lpips forward+backward"):
    j, t = ms[f"jax {piece}"], ms[f"torch {piece}"]
    js, ts = shares.get(f"jax {piece}"), shares.get(f"torch {piece}")
    cells = [f"{j:.1f}", f"{js:.0%}" if js else "", f"{t:.1f}", f"{ts:.0%}" if ts else ""]
    lines.append(f"| {piece} | " + " | ".join(cells) + " |")
  lines.append(f"\nPyTorch / ae-jax step: {result['torch_over_jax_step']:.2f} (batch {result['batch']})")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--budget", type=float, default=6.0, help="timed seconds per piece, over all rounds")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch threads")
  p.add_argument("--data", choices=("auto", "synthetic"), default="auto")
  p.add_argument("--batch", type=int, default=None, help="default: the config's (32)")
  p.add_argument("--out", default="runs/benchmark")
  args = p.parse_args(argv)
  load_start = os.getloadavg()
  result = measure_parts(args.rounds, args.budget, args.threads, args.data, args.batch)
  result.update(
    date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    command=shlex.join(["python", "-m", "benchmarks.vqgan_parts", *argv]),
    load_average={"start": load_start, "end": os.getloadavg()},
  )
  headline = f"{result['command']} ({result['date']})"
  report_module.write_standalone(args.out, "vqgan_parts", result, markdown(result), headline)
  return 0


if __name__ == "__main__":
  sys.exit(main())
