r"""Which sum of the prefix detector's views finds the most UCR anomalies, and how much of that is selection.

    python -m experiments.anomaly_sweep --folder ../shared/data/ucr-dev --exclude 206_ --out runs/sweep.json

Every (method, scale) view of every series (`prefix_detector.view_profiles`) is computed once; then every
sum of up to `--max_methods` of the `--methods` at each of the `--scale_sets` is scored by the archive's
rule (top-1 and top-3, `ae_jax.anomaly.ucr`), exactly as `experiments.anomaly_benchmark` scores one such
sum (tested: the same hits per series). Prints the best sums (most top-1, then most top-3; ties go to the
sum listed first: fewer methods, then the scale sets' order), the sum with the most top-3 hits (then
top-1), and the leave-one-series-out estimate of choosing the best sum this way: each series is scored by
the sum that is best on the other series, so the estimate does not count the choice's fit to that series.
--out (JSON) holds every sum's per-series results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import tqdm

from ae_jax.anomaly import prefix_detector, ucr
from ae_jax.anomaly.window_ae import WindowAEOptions
from ae_jax.core import cli
from ae_jax.core.errors import ConfigError
from experiments.anomaly_benchmark import load_folder

# "mp" is 2-5x slower than the others
CANDIDATES = ("mp_left", "mp_prefix", "mp_raw", "mp_diff", "mp_diff_raw", "ae_error", "ae_latent")


def parse_args(argv: list[str]) -> argparse.Namespace:
  """The command's options."""
  p = argparse.ArgumentParser(prog="python -m experiments.anomaly_sweep", description=__doc__.split("\n")[0])
  p.add_argument("--folder", required=True, help="folder of UCR-format .txt series")
  p.add_argument("--out", help="write every sum's per-series results here (JSON)")
  p.add_argument("--methods", default=",".join(CANDIDATES), help="the candidate methods, comma-separated")
  p.add_argument("--max_methods", type=int, default=4, help="the most methods in one sum")
  p.add_argument(
    "--scale_sets", default="1|0.5,1,2|0.25,0.5,1,2", help="window-length sets (x window), '|'-separated"
  )
  p.add_argument("--steps", type=int, default=WindowAEOptions.steps, help="window autoencoder's steps")
  p.add_argument("--seed", type=int, default=WindowAEOptions.seed)
  p.add_argument("--top", type=int, default=10, help="how many of the best sums to print")
  p.add_argument("--exclude", default="", help="comma-separated substrings of file names to leave out")
  return p.parse_args(argv)


def candidate_sums(
  methods: tuple[str, ...], scale_sets: list[tuple[float, ...]], max_methods: int
) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
  """Every (methods, scales) sum: subsets of 1..max_methods methods (in the given order) x scale sets,
  fewer methods first."""
  return [
    (combo, scales)
    for r in range(1, max_methods + 1)
    for combo in itertools.combinations(methods, r)
    for scales in scale_sets
  ]


def leave_one_out(top1: np.ndarray, top3: np.ndarray) -> tuple[int, int]:
  """Top-1 and top-3 counts when each series (column of the bool [sums, series] matrices) is scored by the
  sum with the most top-1 (then top-3) hits on the other series, the first such sum on ties."""
  score = 2 * top1.shape[1] * top1.astype(int) + top3.astype(int)  # any top-1 hit outweighs all top-3 ones
  total = score.sum(axis=1)
  right1 = right3 = 0
  for i in range(top1.shape[1]):
    best = int(np.argmax(total - score[:, i]))
    right1 += bool(top1[best, i])
    right3 += bool(top3[best, i])
  return right1, right3


def _scale_sets(text: str) -> list[tuple[float, ...]]:
  try:
    sets = [tuple(float(x) for x in part.split(",") if x) for part in text.split("|") if part]
  except ValueError:
    raise ConfigError(f"--scale_sets {text}: give numbers like 1|0.5,1,2") from None
  if not sets or any(not s or min(s) <= 0 for s in sets):
    raise ConfigError(f"--scale_sets {text}: each set needs one or more scales > 0, e.g. 1|0.5,1,2")
  return sets


def run(argv: list[str]) -> dict:
  """Computes the views, scores every sum, prints the best and the leave-one-out estimate."""
  args = parse_args(argv)
  methods = tuple(m for m in args.methods.split(",") if m)
  scale_sets = _scale_sets(args.scale_sets)
  if not 1 <= args.max_methods <= len(methods) or args.steps < 1:
    raise ConfigError(f"--max_methods must be in [1, {len(methods)}] and --steps >= 1")
  union = tuple(sorted({s for scales in scale_sets for s in scales}))
  options = prefix_detector.DetectorOptions(
    methods=methods, scales=union, ae=WindowAEOptions(steps=args.steps, seed=args.seed)
  )
  options.check()
  series = load_folder(args.folder, args.exclude.split(","), options)  # every series checked first
  sums = candidate_sums(methods, scale_sets, args.max_methods)
  top1 = np.zeros((len(sums), len(series)), bool)
  top3 = np.zeros_like(top1)
  seconds = []
  for j, (s, window, _) in enumerate(tqdm.tqdm(series, unit="series", file=sys.stderr, dynamic_ncols=True)):
    start = time.perf_counter()
    views = prefix_detector.view_profiles(s.values, s.train_end, window, options)
    seconds.append(time.perf_counter() - start)
    for i, (combo, scales) in enumerate(sums):
      lengths = set(prefix_detector.window_lengths(window, scales))
      chosen = [v for (m, length), v in views.items() if m in combo and length in lengths]
      scores = prefix_detector.combine(chosen, s.train_end, window)
      found = ucr.top_indices(scores, 3, window, start=s.train_end + window // 2)
      hits = [ucr.is_correct(loc, s.begin, s.end) for loc in found]
      top1[i, j], top3[i, j] = bool(hits[:1] and hits[0]), any(hits)
  loo1, loo3 = leave_one_out(top1, top3)
  order = sorted(range(len(sums)), key=lambda i: (-top1[i].sum(), -top3[i].sum(), i))
  names = [f"{','.join(c)} @ {','.join(f'{x:g}' for x in sc)}" for c, sc in sums]
  n = len(series)
  lines = ["| methods @ scales | top-1 | top-3 |", "|---|---|---|"]
  lines += [f"| {names[i]} | {top1[i].sum()}/{n} | {top3[i].sum()}/{n} |" for i in order[: args.top]]
  most3 = min(range(len(sums)), key=lambda i: (-top3[i].sum(), -top1[i].sum(), i))
  lines.append(
    f"\nthe most top-3 hits: {names[most3]}, top-1 {top1[most3].sum()}/{n}, top-3 {top3[most3].sum()}/{n}"
  )
  lines.append(
    f"{len(sums)} sums on {n} series; the best: top-1 {top1[order[0]].sum()}/{n}, top-3 "
    f"{top3[order[0]].sum()}/{n}; chosen leaving each series out: top-1 {loo1}/{n}, top-3 {loo3}/{n}; "
    f"views computed in {sum(seconds):.0f} s (median {np.median(seconds):.1f} s per series)"
  )
  print("\n".join(lines))
  result = {
    "series": [s.name for s, _, _ in series],
    "sums": {names[i]: {"top1": top1[i].tolist(), "top3": top3[i].tolist()} for i in range(len(sums))},
    "best": names[order[0]],
    "most_top3": names[most3],
    "leave_one_out": {"top1": loo1, "top3": loo3},
  }
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f)
    print(f"results: {args.out}")
  return result


def main() -> None:
  cli.run_or_exit(lambda: run(sys.argv[1:]))


if __name__ == "__main__":
  main()
