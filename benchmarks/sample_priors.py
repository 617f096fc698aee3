r"""Sampling time per image of the priors over codes: the AR transformer through its key/value cache against
its full recompute (the same tokens), with classifier-free guidance, and where the PixelCNN's time goes.

    python -m benchmarks.sample_priors                     # CIFAR-10's 8x8 and Fashion-MNIST's 7x7 grids
    python -m benchmarks.sample_priors --smoke --out DIR   # tiny models, one round: no timing claims

The models have the shipped configs' size (experiments/configs/prior_ar.py's transformer: 4 layers, width
128, 4 heads, MLP 512; prior_pixelcnn.py's PixelCNN: 10 gated layers of 64 features, 5x5 kernels, head
256) and the stage ones' vocabularies (vqvae_cifar10: K = 512 on 8x8; vqvae_fashion_mnist: K = 256 on
7x7), with freshly initialised weights (the time does not depend on their values). Each case draws
--per_device samples in one jitted call, one vmapped `draw` per example as `generate.sample_tokens` does:

* ar cached: `ARPrior.draw` (`sample_cached`: L steps over one token, keys and values cached);
* ar full: `ARPrior.draw_recompute` (`sample_autoregressive`: L forward passes over the whole sequence);
* ar cached, guidance: a conditional prior trained with class_dropout, W = 3 (cond and null share a cache
  of twice the batch);
* pixelcnn row by row: `PixelCNNPrior.draw` (L forward passes, those of row i over the first i + 1 rows);
* pixelcnn full: `PixelCNNPrior.draw_recompute` (L forward passes over the whole grid; the same tokens);
* pixelcnn forward (r rows): one forward pass of the PixelCNN over the first r rows of the grid, in ms per
  image; L x the full grid's is what a full-recompute sample costs if all its time is in the forward
  passes.

How each number is measured: every case is compiled and run once untimed; then --rounds rounds, each
timing one call of every case in turn (interleaved, waited for with jax.block_until_ready); ms per image
is the median over the rounds divided by --per_device. The ratios are of the medians of one run.
Writes DIR/sample_priors.{md,json} with the command, the date and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import measure as measure_module
from benchmarks import report as report_module

GRIDS = {"cifar10": ((8, 8), 512), "fashion_mnist": ((7, 7), 256)}  # (code grid, stage one's K)
TINY_TRANSFORMER = dict(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, dropout=0.0)
TINY_PIXELCNN = dict(features=8, num_layers=2, kernel_size=3, head_features=16)
GUIDANCE = 3.0
CLASSES = 10


def _models(grid: tuple[int, int], vocab: int, smoke: bool) -> dict[str, Any]:
  from ae_jax.generation.code_priors import ARPrior
  from ae_jax.generation.pixelcnn_prior import PixelCNNPrior
  from experiments.configs.prior_ar import TRANSFORMER
  from experiments.configs.prior_pixelcnn import PIXELCNN

  length = grid[0] * grid[1]
  trunk = TINY_TRANSFORMER if smoke else {**TRANSFORMER, "dropout": 0.0}
  vocab = 16 if smoke else vocab
  built = {
    "ar": ARPrior(vocab_size=vocab, input_shape=(length,), **trunk),
    "ar_conditional": ARPrior(
      vocab_size=vocab, input_shape=(length,), num_classes=CLASSES, class_dropout=0.1, **trunk
    ),
    "pixelcnn": PixelCNNPrior(
      vocab_size=vocab, grid=grid, input_shape=(length,), **(TINY_PIXELCNN if smoke else PIXELCNN)
    ),
  }
  out = {}
  for name, model in built.items():
    labels = jnp.zeros((1,), jnp.int32) if model.num_classes else None
    out[name] = (model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32), labels=labels))
  return out


def _sampler(model: Any, method: str, options: Any) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """A jitted (variables, keys [b], labels [b]) -> tokens [b, L]: one `method` draw per example, vmapped
  (as `generate._sampler` with the prior's `draw`)."""

  def one(variables: Any, key: jax.Array, label: jax.Array) -> jax.Array:
    labels = label[None] if model.num_classes else None
    return getattr(model, method)(variables, key, labels, options)[0]

  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def cases(grid: tuple[int, int], vocab: int, per_device: int, smoke: bool) -> dict[str, Callable[[], Any]]:
  """{case name: a call that draws (or runs) one batch of per_device examples}, compiled lazily."""
  from ae_jax.generation import generate

  models = _models(grid, vocab, smoke)
  keys = jax.random.split(jax.random.PRNGKey(1), per_device)
  labels = jnp.arange(per_device, dtype=jnp.int32) % CLASSES
  plain, guided = generate.SampleOptions(), generate.SampleOptions(guidance=GUIDANCE)

  def draw(name: str, method: str, options: Any) -> Callable[[], Any]:
    model, variables = models[name]
    fn = _sampler(model, method, options)
    return lambda: fn(variables, keys, labels)

  out = {
    "ar cached": draw("ar", "draw", plain),
    "ar full": draw("ar", "draw_recompute", plain),
    f"ar cached, guidance {GUIDANCE:g}": draw("ar_conditional", "draw", guided),
    "pixelcnn row by row": draw("pixelcnn", "draw", plain),
    "pixelcnn full": draw("pixelcnn", "draw_recompute", plain),
  }
  pixelcnn, variables = models["pixelcnn"]
  for rows in sorted({1, (grid[0] + 1) // 2, grid[0]}):
    part = pixelcnn.clone(grid=(rows, grid[1]), input_shape=(rows * grid[1],))
    tokens = jnp.zeros((per_device, rows * grid[1]), jnp.int32)
    forward = jax.jit(lambda v, t, m=part: m.apply(v, t, method="logits"))
    out[f"pixelcnn forward ({rows} rows)"] = lambda f=forward, t=tokens: f(variables, t)
  return out


def measure(per_device: int, rounds: int, smoke: bool) -> dict[str, Any]:
  """{grid name: {case: {"ms_per_image", "rounds_ms"}}, and the ratios} (module docstring)."""
  result: dict[str, Any] = {}
  for name, (grid, vocab) in GRIDS.items():
    calls = cases(grid, vocab, per_device, smoke)
    for call in calls.values():  # compile, and one untimed run
      jax.block_until_ready(call())
      jax.block_until_ready(call())
    times = measure_module.interleaved_seconds(calls, rounds)
    rows = {
      case: {
        "ms_per_image": 1e3 * statistics.median(t) / per_device,
        "rounds_ms": [1e3 * x for x in t],
      }
      for case, t in times.items()
    }
    length = grid[0] * grid[1]
    result[name] = {
      "grid": list(grid),
      "vocab": 16 if smoke else vocab,
      "cases": rows,
      "full_over_cached": rows["ar full"]["ms_per_image"] / rows["ar cached"]["ms_per_image"],
      "pixelcnn_full_over_rows": rows["pixelcnn full"]["ms_per_image"]
      / rows["pixelcnn row by row"]["ms_per_image"],
      "pixelcnn_full_over_L_forwards": rows["pixelcnn full"]["ms_per_image"]
      / (length * rows[f"pixelcnn forward ({grid[0]} rows)"]["ms_per_image"]),
    }
  return result


def markdown(result: dict[str, Any]) -> str:
  lines = []
  for name, r in result.items():
    grid = "x".join(str(g) for g in r["grid"])
    lines += [f"### {name} ({grid} grid, K = {r['vocab']})", "", "| case | ms per image |", "|---|---:|"]
    lines += [f"| {case} | {row['ms_per_image']:.3f} |" for case, row in r["cases"].items()]
    lines += [
      "",
      f"ar full / ar cached: {r['full_over_cached']:.2f}x; pixelcnn full / row by row: "
      f"{r['pixelcnn_full_over_rows']:.2f}x; pixelcnn full / (L x one full-grid forward): "
      f"{r['pixelcnn_full_over_L_forwards']:.2f}",
      "",
    ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--per_device", type=int, default=16, help="samples per call (experiments.sample's default)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--out", default="runs/benchmark")
  p.add_argument("--smoke", action="store_true", help="tiny models, one round: no timing claims")
  args = p.parse_args(argv)
  rounds, per_device = (1, 2) if args.smoke else (args.rounds, args.per_device)
  load_start = os.getloadavg()
  result = measure(per_device, rounds, args.smoke)
  report = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "command": shlex.join(["python", "-m", "benchmarks.sample_priors", *argv]),
    "timing_claims": not args.smoke,
    "device": str(jax.devices()[0]),
    "cores": len(os.sched_getaffinity(0)),
    "load_average": {"start": load_start, "end": os.getloadavg()},
    "per_device": per_device,
    "rounds": rounds,
    "results": result,
  }
  headline = f"{report['command']} ({report['date']}, {report['device']}, {report['cores']} cores)"
  report_module.write_standalone(args.out, "sample_priors", report, markdown(result), headline)
  return 0


if __name__ == "__main__":
  sys.exit(main())
