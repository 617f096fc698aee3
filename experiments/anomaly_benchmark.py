r"""The UCR Time Series Anomaly Archive benchmark: the prefix detector on every series of a folder.

    python -m experiments.anomaly_benchmark --folder ../shared/data/ucr-dev --out runs/ucr_dev.md
    python -m experiments.anomaly_benchmark --folder DIR --methods mp --scales 1   # the matrix profile alone

Each file `<name>_<train_end>_<begin>_<end>.txt` (one value per line, or space-separated) is scored with
nothing but its values and train_end (`ae_jax.anomaly.prefix_detector`, the same options for every
series); its top-1 location is correct when it lies in [begin - 100, end + 100], top-3 when any of the 3
best non-overlapping candidates does (`ae_jax.anomaly.ucr`). Prints one row per series (and writes them to
--out: markdown, or JSON when the name ends .json) with the window, the locations, whether they are right
and the seconds each series took (training and scoring), then the totals. Every series is read and its
window checked before any compute; a problem is one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import tqdm

from ae_jax.anomaly import prefix_detector, ucr
from ae_jax.anomaly.window_ae import WindowAEOptions
from ae_jax.core import cli
from ae_jax.core.errors import ConfigError, DataError


def parse_args(argv: list[str]) -> argparse.Namespace:
  """The command's options."""
  d = prefix_detector.DetectorOptions()
  p = argparse.ArgumentParser(
    prog="python -m experiments.anomaly_benchmark", description=__doc__.split("\n")[0]
  )
  p.add_argument("--folder", required=True, help="folder of UCR-format .txt series")
  p.add_argument("--out", help="write the table here (markdown; JSON when it ends .json)")
  p.add_argument(
    "--methods", default=",".join(d.methods), help=f"comma-separated, of {prefix_detector.METHODS}"
  )
  p.add_argument("--window", type=int, default=d.window, help="points (0: dominant period of the prefix)")
  p.add_argument("--max_window", type=int, default=d.max_window, help="longest automatic window")
  p.add_argument("--scales", default=",".join(f"{s:g}" for s in d.scales), help="window lengths, x window")
  p.add_argument("--steps", type=int, default=d.ae.steps, help="training steps of the window autoencoder")
  p.add_argument("--seed", type=int, default=d.ae.seed)
  p.add_argument("--exclude", default="", help="comma-separated substrings of file names to leave out")
  return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> prefix_detector.DetectorOptions:
  """DetectorOptions from the command's options; ConfigError for values that cannot work."""
  try:
    scales = tuple(float(s) for s in args.scales.split(",") if s)
  except ValueError:
    raise ConfigError(f"--scales {args.scales}: give numbers separated by commas, e.g. 0.5,1,2") from None
  if args.steps < 1:
    raise ConfigError("--steps must be at least 1")
  options = prefix_detector.DetectorOptions(
    methods=tuple(m for m in args.methods.split(",") if m),
    window=args.window,
    max_window=args.max_window,
    scales=scales,
    ae=WindowAEOptions(steps=args.steps, seed=args.seed),
  )
  options.check()
  return options


def load_folder(folder: str, exclude: list[str], options: prefix_detector.DetectorOptions):
  """Reads every series and chooses its window (cheap) before any compute: [(series, window, rule)]."""
  out = []
  for path in ucr.series_files(folder):
    if any(e and e in os.path.basename(path) for e in exclude):
      continue
    s = ucr.read_series(path)
    m, rule = prefix_detector.choose_window(s.values, s.train_end, options)
    lengths = prefix_detector.window_lengths(m, options.scales)
    fix = "pass a shorter --window or --max_window, or smaller --scales"
    try:
      prefix_detector.check_lengths(len(s.values), s.train_end, lengths, fix=fix)
    except ConfigError as e:
      raise DataError(f"{s.name}: {e}") from None
    out.append((s, m, rule))
  if not out:
    raise DataError(f"--exclude {','.join(exclude)} leaves no series of {folder}")
  return out


def run(argv: list[str]) -> dict:
  """Scores the folder and prints/writes the table; returns {"rows": [...], "top1": k, "top3": k, ...}."""
  args = parse_args(argv)
  options = options_from(args)
  series = load_folder(args.folder, args.exclude.split(","), options)
  rows = []
  bar = tqdm.tqdm(series, unit="series", dynamic_ncols=True, file=sys.stderr)
  for s, _, _ in bar:
    bar.set_postfix_str(s.name[:40])
    start = time.perf_counter()
    found = prefix_detector.detect_after_prefix(s.values, s.train_end, options)
    seconds = time.perf_counter() - start
    hits = [ucr.is_correct(loc, s.begin, s.end) for loc in found.locations]
    rows.append(
      {
        "series": s.name,
        "points": len(s.values),
        "train_end": s.train_end,
        "anomaly": [s.begin, s.end],
        "window": found.window,
        "locations": found.locations,
        "top1": bool(hits[:1] and hits[0]),
        "top3": any(hits[:3]),
        "seconds": round(seconds, 2),
      }
    )
  result = {
    "folder": args.folder,
    "options": {
      "methods": list(options.methods),
      "window": options.window,
      "scales": list(options.scales),
      "max_window": options.max_window,
      "steps": options.ae.steps,
      "seed": options.ae.seed,
    },
    "rows": rows,
    "series": len(rows),
    "top1": sum(r["top1"] for r in rows),
    "top3": sum(r["top3"] for r in rows),
    "median_seconds": statistics.median(r["seconds"] for r in rows),
    "max_seconds": max(r["seconds"] for r in rows),
  }
  text = markdown(result)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(json.dumps(result, indent=1) if args.out.endswith(".json") else text)
    print(f"table: {args.out}")
  return result


def markdown(result: dict) -> str:
  """The per-series table and the totals line."""
  lines = [
    "| series | points | train_end | anomaly | window | top-1 location | top-1 | top-3 | seconds |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    loc = r["locations"][0] if r["locations"] else "-"
    lines.append(
      f"| {r['series']} | {r['points']} | {r['train_end']} | {r['anomaly'][0]}-{r['anomaly'][1]} | "
      f"{r['window']} | {loc} | {'yes' if r['top1'] else 'no'} | {'yes' if r['top3'] else 'no'} | "
      f"{r['seconds']:.1f} |"
    )
  n = result["series"]
  lines.append(
    f"\nmethods {','.join(result['options']['methods'])}: top-1 {result['top1']}/{n}, "
    f"top-3 {result['top3']}/{n}; "
    f"seconds per series: median {result['median_seconds']:.1f}, max {result['max_seconds']:.1f}"
  )
  return "\n".join(lines)


def main() -> None:
  cli.run_or_exit(lambda: run(sys.argv[1:]))


if __name__ == "__main__":
  main()
