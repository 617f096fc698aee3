r"""One markdown table row per finished run, from what each workdir holds (results.json, the evaluations
`experiments.evaluate` wrote of the same step, metrics.jsonl and the config saved with its latest checkpoint).

    python -m experiments.table runs/vq_ema runs/vq_rotation \
        --columns "test NMSE=test/nmse,codes used=codebook/codes_used,bits=bits,ms/step=ms_per_step"

A column is LABEL=KEY (or just KEY; KEY|KEY2 takes the first a run has): a key of results.json or of
WORKDIR/eval_<step>.json for the run's final step (evaluators added afterwards with `experiments.evaluate
--add`; results.json's value wins where both have a key), or one of the derived values
  bits         bits per example of a quantized model's code (positions x sum of log2 K, as
  ae_jax.runner.bottleneck)
  ms_per_step  median over the logged intervals of global batch / examples_per_sec: training wall time
               per step, compilation excluded (the trainer leaves the first dispatch out of its rates)
  steps        the run's last step
Missing values print as "–". Rows are labelled by the workdir's name.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

DERIVED = ("bits", "ms_per_step", "steps")


def ms_per_step(workdir: str, global_batch: int) -> float | None:
  """Median over logged training intervals of 1000 * global_batch / examples_per_sec."""
  rates = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if row.get("examples_per_sec"):
        rates.append(1000.0 * global_batch / row["examples_per_sec"])
  return statistics.median(rates) if rates else None


def final_results(workdir: str) -> dict[str, Any]:
  """results.json of a finished run, completed by WORKDIR/eval_<step>.json of the same step if it exists
  (keys results.json lacks: evaluators added after training)."""
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  later = os.path.join(workdir, f"eval_{results.get('step')}.json")
  if os.path.exists(later):
    with open(later) as f:
      added = json.load(f)
    if added.get("step", results.get("step")) == results.get("step"):
      results = {**added, **results}
  return results


def row_values(workdir: str, keys: list[str]) -> dict[str, Any]:
  """The value of every key for one run (None where the run has none)."""
  results = final_results(workdir)
  values: dict[str, Any] = {
    k: next((results[a] for a in k.split("|") if a in results), None) for k in keys if k not in DERIVED
  }
  if set(keys) & set(DERIVED):
    from ae_jax.generation import stage_one

    _, config = stage_one.saved_config(workdir)
    if "ms_per_step" in keys:
      values["ms_per_step"] = ms_per_step(workdir, int(config.batch_size))
    if "steps" in keys:
      values["steps"] = results.get("step")
    if "bits" in keys:
      from ae_jax.runner.bottleneck import inspect_config

      values["bits"] = inspect_config(config).bits
  return values


def _fmt(value: Any) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    if value == int(value) and abs(value) >= 1:
      return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
  return str(value)


def table(workdirs: list[str], columns: list[tuple[str, str]]) -> str:
  """Markdown lines: a header of the column labels, then one row per workdir."""
  keys = [key for _, key in columns]
  lines = ["| run | " + " | ".join(label for label, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for workdir in workdirs:
    values = row_values(workdir, keys)
    cells = [_fmt(values.get(key)) for key in keys]
    lines.append(f"| {os.path.basename(os.path.normpath(workdir))} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_columns(text: str) -> list[tuple[str, str]]:
  """'LABEL=KEY,KEY,...' -> [(label, key)]."""
  out = []
  for item in text.split(","):
    label, _, key = item.rpartition("=")
    out.append((label or key, key))
  return out


def main(argv: list[str]) -> int:
  if "--columns" not in argv or argv.index("--columns") + 1 >= len(argv):
    print("usage: python -m experiments.table WORKDIR... --columns LABEL=KEY,...", file=sys.stderr)
    return 2
  i = argv.index("--columns")
  columns, workdirs = parse_columns(argv[i + 1]), argv[:i] + argv[i + 2 :]
  for w in workdirs:
    if not os.path.exists(os.path.join(w, "results.json")):
      print(f"error: {w} has no results.json (the run has not finished); run it first", file=sys.stderr)
      return 1
  print(table(workdirs, columns))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
