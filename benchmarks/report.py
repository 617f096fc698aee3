"""The suite's report: the ratios derived from the measurements, and the Markdown tables of benchmark.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMPARE_COLUMNS = tuple(
  "baseline|ae-jax config|batch|threads|JAX step ms|PyTorch step ms|PyTorch/JAX step|JAX loop ms|"
  "PyTorch loop ms|PyTorch/JAX loop".split("|")
)
GPU_COLUMNS = tuple(
  "model|data|batch|JAX step ms|JAX img/s|loop ms|step ÷ loop|PyTorch ms|PyTorch/JAX".split("|")
)


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


def write_standalone(out: str, name: str, report: dict[str, Any], text: str, headline: str) -> None:
  """Writes OUT/NAME.json (`report`) and OUT/NAME.md (`text`, a Markdown table) of a benchmark run on its
  own, and prints `headline`, the load average at its start and end (report["load_average"]) and `text`."""
  folder = Path(out)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / f"{name}.json").write_text(json.dumps(report, indent=1))
  (folder / f"{name}.md").write_text(text)
  load = report["load_average"]
  print(headline)
  print(f"load average at start / end: {load['start'][0]:.2f} / {load['end'][0]:.2f}")
  print(text)
