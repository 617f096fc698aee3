r"""Where a model's train step spends its time: a jax.profiler trace of a few steps, summed by operation.

    python -m benchmarks.profile_ops --model conv_ae            # a shipped model of benchmarks.measure.MODELS
    python -m benchmarks.profile_ops --model vqvae --steps 10 --top 15 --out runs/profile_vqvae

The model is built from its shipped config exactly as the trainer builds it (`measure.build`); after one
compiling and one warm dispatch, `--steps` dispatches run under `jax.profiler.trace` (a TensorBoard /
Perfetto trace in --out). The table sums the XLA operations' traced durations by kind (convolution,
fusion, ...) over every thread, as a percentage of the wall time of the traced steps (operations run on
several threads at once, so the column can exceed 100% in total); the whole trace stays in --out for
TensorBoard's Profile tab.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import time

import jax

from benchmarks import measure


def op_totals(trace_file: str) -> dict[str, float]:
  """{XLA operation: summed duration in ms} of a Chrome-format trace file; numbered instances (fusion.3,
  fusion.12) are summed under one name."""
  opener = gzip.open if trace_file.endswith(".gz") else open
  with opener(trace_file, "rt") as f:
    events = json.load(f)["traceEvents"]
  totals: dict[str, float] = collections.defaultdict(float)
  for e in events:
    if e.get("ph") == "X" and "dur" in e and "hlo_op" in e.get("args", {}):  # XLA operations only
      name = re.sub(r"\.\d+$", "", str(e["args"]["hlo_op"]))  # fusion.12 and fusion.3 count together
      totals[name] += e["dur"] / 1e3
  return dict(totals)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", required=True, choices=sorted(measure.MODELS))
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--top", type=int, default=12)
  p.add_argument("--out", default=None, help="trace folder (default runs/profile_MODEL)")
  args = p.parse_args(argv)
  out = args.out or f"runs/profile_{args.model}"
  config = measure.shipped_config(args.model)
  used = measure.resolve_data(config, "auto", 4096, measure.MODELS[args.model].shape)
  bench = measure.build(config)
  batches = measure.host_batches(bench)
  from ae_jax.core import parallel

  rstate = parallel.replicate(bench.state)
  for _ in range(2):  # compile, then one warm step
    rstate, _m = bench.p_train(rstate, measure.dispatch(batches, 1))
    jax.block_until_ready(rstate)
  inputs = [measure.dispatch(batches, 1) for _ in range(args.steps)]
  start = time.perf_counter()
  with jax.profiler.trace(out, create_perfetto_trace=True):
    for batch in inputs:
      rstate, _m = bench.p_train(rstate, batch)
    jax.block_until_ready(rstate)
  wall_ms = (time.perf_counter() - start) * 1e3
  files = sorted(glob.glob(os.path.join(out, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
  if not files:
    raise SystemExit(f"error: jax.profiler wrote no Perfetto trace under {out}")
  totals = op_totals(files[-1])
  print(f"{args.model} ({used}), batch {config.batch_size}: {wall_ms / args.steps:.2f} ms/step traced")
  print(f"trace: {out} (tensorboard --logdir {out})\n")
  print("| operation | ms/step | % of step |\n|---|---|---|")
  for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
    print(f"| `{name[:60]}` | {ms / args.steps:.2f} | {100 * ms / wall_ms:.0f}% |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
