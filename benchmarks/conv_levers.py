r"""The convolution gap: the VQ-VAE train step on XLA:CPU under each lever that could change how its
convolutions run, against the PyTorch baseline timed in the same process.

    python -m benchmarks.conv_levers                         # every lever, 2 rounds
    python -m benchmarks.conv_levers --levers baseline,onednn --rounds 3 --out DIR

Levers (`LEVERS`): XLA:CPU flags (oneDNN, XNNPACK, fast math; the YNNPACK and oneDNN library-fusion
types, `--xla_cpu_experimental_{ynn,onednn}_fusion_type`, each value they take: `FUSION_TYPES`), bfloat16
compute (config.dtype), and two rewrites of every flax convolution, each checked against
`lax.conv_general_dilated` before timing: shifted slices and one matmul ("im2col", `patches_conv`) and
channels-first layout ("nchw", `nchw_conv`). Each
(round, lever) is a fresh process, so each flag takes effect and nothing is shared; in it the ae-jax step
(the vqvae comparison's counterpart config of `benchmarks.measure.COMPARISONS`, as `benchmarks.run` times
it) and the PyTorch baseline (`torch_models`, --threads threads) are timed interleaved A B A B, and the
ratio PyTorch / ae-jax is taken in that process. Reported: medians over rounds, and how often the compiled
step's HLO text names YNNPACK fusions and oneDNN (whether a flag changed the kernels at all). Writes
DIR/conv_levers.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from jax import lax

_ORIGINAL_CONV = lax.conv_general_dilated  # before any lever replaces it

# lever -> (extra XLA_FLAGS, config overrides, how convolutions are written: None as flax writes them,
# "im2col" as slices + one matmul, "nchw" in channels-first layout)
LEVERS: dict[str, tuple[str, dict[str, Any], str | None]] = {
  "baseline": ("", {}, None),
  "onednn": ("--xla_cpu_use_onednn=true", {}, None),
  "onednn_custom_call": (
    "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    {},
    None,
  ),
  "xnnpack": ("--xla_cpu_use_xnnpack=true", {}, None),
  "fast_math": ("--xla_cpu_enable_fast_math=true", {}, None),
  "bfloat16": ("", {"dtype": "bfloat16"}, None),
  "im2col": ("", {}, "im2col"),
  "nchw": ("", {}, "nchw"),
}
# The library-fusion flags of this jaxlib (0.10): each takes a comma-separated list of LibraryFusionType
# names, which replaces the default list, or +name / -name items, which edit it. The names it accepts
# (the enum xla.DebugOptions.LibraryFusionType; anything else stops the process with "Illegal value"):
FUSION_TYPES = ("dot", "eltwise", "reduce", "individual_dot", "individual_convolution")
# YNNPACK's default list holds individual_dot (the shipped step's dots are YNN fusions); "ynn_all" adds
# every other type to it. The oneDNN list is read only with --xla_cpu_use_onednn=true (alone it changes
# nothing in the compiled step), so each oneDNN lever sets both.
YNN, ONEDNN = "--xla_cpu_experimental_ynn_fusion_type", "--xla_cpu_experimental_onednn_fusion_type"
LEVERS.update({f"ynn_{t}": (f"{YNN}={t}", {}, None) for t in FUSION_TYPES})
LEVERS["ynn_all"] = (f"{YNN}=" + ",".join(f"+{t}" for t in FUSION_TYPES if t != "individual_dot"), {}, None)
LEVERS.update({f"onednn_{t}": (f"--xla_cpu_use_onednn=true {ONEDNN}={t}", {}, None) for t in FUSION_TYPES})


def patches_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, **kw):
  """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels without dilation or groups, as
  `ae_jax.models.layers.patches_conv` (shifted strided slices and one matmul)."""
  from ae_jax.models.layers import patches_conv as library_patches_conv

  if any(d not in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    raise NotImplementedError("patches_conv: dilation")
  if kw.get("feature_group_count", 1) != 1:
    raise NotImplementedError("patches_conv: feature groups")
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return library_patches_conv(lhs, rhs, window_strides, padding)


def nchw_conv(lhs, rhs, window_strides, padding, **kw):
  """`lax.conv_general_dilated` of NHWC inputs and HWIO kernels computed in NCHW / OIHW layout."""
  kw.pop("dimension_numbers", None)
  y = _ORIGINAL_CONV(
    lhs.transpose(0, 3, 1, 2),
    rhs.transpose(3, 2, 0, 1),
    window_strides,
    padding,
    dimension_numbers=("NCHW", "OIHW", "NCHW"),
    **kw,
  )
  return y.transpose(0, 2, 3, 1)


def _check_rewritten_convs() -> float:
  """Largest |patches_conv or nchw_conv - lax.conv_general_dilated| over the VQ-VAE's convolutions."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  worst = 0.0
  key = jax.random.PRNGKey(0)
  for k, stride, pad in ((4, 2, ((1, 1), (1, 1))), (3, 1, ((1, 1), (1, 1))), (1, 1, "SAME"), (3, 1, "VALID")):
    x = jax.random.normal(key, (2, 8, 8, 5))
    w = jax.random.normal(jax.random.fold_in(key, k), (k, k, 5, 7))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    want = lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=dn)
    for fn in (patches_conv, nchw_conv):
      got = fn(x, w, (stride, stride), pad, dimension_numbers=dn)
      worst = max(worst, float(jnp.max(jnp.abs(got - want))))
  return worst


def worker(lever: str, settings: dict[str, Any]) -> dict[str, Any]:
  """One lever in this process (XLA_FLAGS already set): the step and the baseline, interleaved."""
  from unittest import mock

  from benchmarks import measure, torch_models

  flags, overrides, conv = LEVERS[lever]
  threads = torch_models.thread_setup(settings["threads"])
  cmp = next(c for c in measure.COMPARISONS if c.label == "vqvae")
  config = measure.comparison_config(cmp)
  used = measure.resolve_data(config, "auto", 4096, cmp.shape)
  for key, value in overrides.items():
    measure.set_path(config, key, value)
  result: dict[str, Any] = {"lever": lever, "xla_flags": os.environ.get("XLA_FLAGS", ""), "data": used}
  if conv:
    result["rewritten_conv_max_abs_error"] = _check_rewritten_convs()
  rewrite = {"im2col": patches_conv, "nchw": nchw_conv}.get(conv)
  with mock.patch("flax.linen.linear.lax.conv_general_dilated", rewrite) if rewrite else _nothing():
    timer = measure.StepTimer(measure.build(config), 1)
    result["compile_s"] = timer.call()
  one = timer.call()
  hlo = timer.bench.p_train.lower(timer.rstate, timer.batch).compile().as_text().lower()
  result["compiled"] = {lib: hlo.count(lib) for lib in ("ynn_fusion", "onednn", "xnn_fusion", "convolution")}
  baseline = torch_models.make(cmp.baseline, config.batch_size)
  torch_one = measure.time_torch(baseline, 2)[1]
  n_jax = max(2, int(settings["budget"] / one / settings["rounds"]))
  n_torch = max(2, int(settings["budget"] / torch_one / settings["rounds"]))
  jax_s, torch_s = [], []
  for _ in range(settings["rounds"]):
    jax_s += timer.round(n_jax)
    torch_s += measure.time_torch(baseline, n_torch)
  result.update(
    jax_ms=1e3 * statistics.median(jax_s),
    torch_ms=1e3 * statistics.median(torch_s),
    threads=list(threads),
    samples={"jax": len(jax_s), "torch": len(torch_s)},
  )
  result["torch_over_jax"] = result["torch_ms"] / result["jax_ms"]
  return result


class _nothing:
  def __enter__(self) -> None:
    return None

  def __exit__(self, *exc: Any) -> None:
    return None


def markdown(rows: list[dict[str, Any]]) -> str:
  """One row per lever: medians over its processes."""
  by: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    by.setdefault(r["lever"], []).append(r)
  base = statistics.median(r["jax_ms"] for r in by["baseline"]) if "baseline" in by else None
  lines = [
    "| lever | XLA_FLAGS / change | ae-jax step ms | PyTorch step ms | PyTorch / ae-jax | vs baseline step "
    "| compiled step: ynn_fusion / onednn mentions |",
    "|---|---|---|---|---|---|---|",
  ]
  for lever, rs in by.items():
    flags, overrides, conv = LEVERS[lever]
    what = flags or ", ".join(f"config.{k}={v}" for k, v in overrides.items())
    what = what or {"im2col": "every convolution as slices + one matmul", "nchw": "NCHW / OIHW"}.get(conv, "")
    jax_ms = statistics.median(r["jax_ms"] for r in rs)
    torch_ms = statistics.median(r["torch_ms"] for r in rs)
    ratio = statistics.median(r["torch_over_jax"] for r in rs)
    vs = f"{base / jax_ms:.2f}x" if base else ""
    seen = rs[0].get("compiled", {})
    libs = f"{seen.get('ynn_fusion', '')} / {seen.get('onednn', '')}"
    lines.append(
      f"| {lever} | {what or 'shipped'} | {jax_ms:.1f} | {torch_ms:.1f} | {ratio:.2f} | {vs} | {libs} |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--levers", default=",".join(LEVERS))
  p.add_argument("--rounds", type=int, default=2, help="processes per lever (interleaved lever by lever)")
  p.add_argument("--budget", type=float, default=6.0, help="timed seconds per side in each process")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch threads")
  p.add_argument("--out", default="runs/benchmark")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  settings = {"budget": args.budget, "threads": args.threads, "rounds": 3}
  if args.worker:
    print("RESULT " + json.dumps(worker(args.worker, settings)))
    return 0
  levers = [x for x in args.levers.split(",") if x]
  unknown = sorted(set(levers) - set(LEVERS))
  if unknown:
    raise SystemExit(f"error: unknown levers {unknown}; choose from {list(LEVERS)}")
  out = Path(args.out)
  (out / "logs").mkdir(parents=True, exist_ok=True)
  load_start, rows, errors = os.getloadavg(), [], {}
  for r in range(args.rounds):
    for lever in levers:
      env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {LEVERS[lever][0]}".strip()}
      cmd = [sys.executable, "-m", "benchmarks.conv_levers", "--worker", lever, "--budget", str(args.budget)]
      cmd += ["--threads", str(args.threads)]
      done = subprocess.run(cmd, env=env, capture_output=True, text=True)
      (out / "logs" / f"conv_levers_{lever}_{r}.txt").write_text(done.stdout + done.stderr)
      found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
      if done.returncode or not found:
        errors[f"{lever}:{r}"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
        print(f"{lever} (round {r}): failed, see {out / 'logs'}", flush=True)
        continue
      rows.append(json.loads(found[-1][len("RESULT ") :]))
      print(
        f"{lever} (round {r}): {rows[-1]['jax_ms']:.1f} ms, PyTorch {rows[-1]['torch_ms']:.1f} ms", flush=True
      )
  report = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "command": shlex.join(["python", "-m", "benchmarks.conv_levers", *argv]),
    "load_average": {"start": load_start, "end": os.getloadavg()},
    "rows": rows,
    "errors": errors,
  }
  (out / "conv_levers.json").write_text(json.dumps(report, indent=1))
  text = markdown(rows) if rows else "no lever ran\n"
  (out / "conv_levers.md").write_text(text)
  print(
    f"\n{report['command']} ({report['date']}); load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}"
  )
  print(text)
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
