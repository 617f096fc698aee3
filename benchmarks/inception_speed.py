r"""Images per second of the FID Inception network's forward pass (`metrics.inception.InceptionV3`: resize
to 299 x 299, the network, pool features and logits), what FID of N images costs on this machine.

    python -m benchmarks.inception_speed                       # 32 px RGB inputs, batches of 16, 32, 64
    python -m benchmarks.inception_speed --smoke --out DIR     # one small batch, one round: no timing claims

The weights are freshly initialised (the time does not depend on their values; the real ones need not be
on the machine). Each batch size is one jitted call of `InceptionV3().apply` on [B, 32, 32, 3] images in
[0, 1]; every call is compiled and run once untimed, then --rounds rounds time one call of every batch size
in turn (interleaved, waited for with jax.block_until_ready). images/s is the batch over the median time.
The FLOPs per image are the compiled call's cost_analysis()["flops"] / B; the matmul peak is
`measure.matmul_peak` (float32 jnp.dot of two 2048 x 2048 matrices); the fraction of the peak is FLOPs/s over
that peak. Writes DIR/inception_speed.{md,json} with the command, the date and the load average at the
start and end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import measure as measure_module
from benchmarks import report as report_module

IMAGE = (32, 32, 3)
BATCHES = (16, 32, 64)


def measure(batches: tuple[int, ...], rounds: int, matmul_size: int) -> dict[str, Any]:
  """{"rows": {batch: {"images_per_s", "ms_per_batch", "flops_per_image", "fraction_of_peak"}}, "peak"}."""
  from ae_jax.metrics.inception import InceptionV3

  model = InceptionV3()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE)))
  calls, flops = {}, {}
  for b in batches:
    images = jax.random.uniform(jax.random.PRNGKey(b), (b, *IMAGE))
    compiled = jax.jit(model.apply).lower(variables, images).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops[b] = float(cost.get("flops", float("nan"))) / b
    calls[b] = lambda c=compiled, x=images: c(variables, x)
    jax.block_until_ready(calls[b]())
  times = measure_module.interleaved_seconds(calls, rounds)
  peak = measure_module.matmul_peak(matmul_size, 5)
  rows = {}
  for b in batches:
    seconds = statistics.median(times[b])
    rows[str(b)] = {
      "images_per_s": b / seconds,
      "ms_per_batch": 1e3 * seconds,
      "rounds_ms": [1e3 * t for t in times[b]],
      "flops_per_image": flops[b],
      "fraction_of_peak": flops[b] * b / seconds / peak["flops_per_s"],
    }
  return {"rows": rows, "matmul_peak": peak}


def markdown(result: dict[str, Any], num: int) -> str:
  """The table: one row per batch size, with the seconds N images would take."""
  lines = [
    f"| batch | images/s | ms per batch | GFLOPs per image | fraction of the matmul peak "
    f"| s for {num:,} images |",
    "|---|---|---|---|---|---|",
  ]
  for b, row in result["rows"].items():
    lines.append(
      f"| {b} | {row['images_per_s']:.2f} | {row['ms_per_batch']:.0f} | {row['flops_per_image'] / 1e9:.2f} "
      f"| {row['fraction_of_peak']:.2f} | {num / row['images_per_s']:.0f} |"
    )
  peak = result["matmul_peak"]
  lines.append(f"\nmatmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (float32, n = {peak['n']})")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  """Command line (module docstring)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--num", type=int, default=10_000, help="the N of the 'seconds for N images' column")
  p.add_argument("--smoke", action="store_true", help="one batch of 2, one round, a small matmul")
  p.add_argument("--out", default="runs/benchmarks/inception_speed")
  args = p.parse_args(argv)
  batches = (2,) if args.smoke else tuple(int(b) for b in args.batches.split(","))
  load_start = os.getloadavg()
  result = measure(batches, 1 if args.smoke else args.rounds, 256 if args.smoke else 2048)
  report = {
    "command": shlex.join([sys.executable, "-m", "benchmarks.inception_speed", *(argv or sys.argv[1:])]),
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "load_average": {"start": load_start, "end": os.getloadavg()},
    **result,
  }
  headline = f"Inception forward, {IMAGE[0]} px inputs resized to 299, on {jax.devices()[0].platform}"
  report_module.write_standalone(args.out, "inception_speed", report, markdown(result, args.num), headline)
  return 0


if __name__ == "__main__":
  sys.exit(main())
