r"""Bottleneck inspector: every submodule's output shape and parameters, and the compression ratio.

    python -m ae_jax.runner.bottleneck --config experiments/configs/conv_ae_fashion_mnist.py \
      --config.model.code_dim=32

builds the model exactly as training does (`train.build`, input shape from `config.model.input_shape` or
else `data.example_spec(config.data)`, with its dtype) and prints `format_report(inspect_model(...))`.
Everything is shape inference (`jax.eval_shape`): no parameters are initialised and nothing is compiled.

Which output is the code: the first of `CODE_KEYS` the model returns, i.e. `outputs["code"]`, else (a VAE
without a "code") `outputs["mean"]`, the mean of q(z|x), else `outputs["z"]`. Its size is counted in numbers
per example, not bits: a VAE's code (limited by its KL term) or a VQ-VAE's integer indices can carry much
less information than their size suggests, so a ratio <= 1 means the *size* is no bottleneck, not that nothing
is compressed.

Batch handling: the model is traced at two batch sizes (2 and 3); a dimension that grows with the batch is
shown as B (or B*k for a batch folded with another axis, e.g. [B*T, F]), and "per example" sizes are the
growth per added example. Outputs that do not depend on the batch (a codebook, a scalar) show their full size.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import linen as nn
from ml_collections import config_flags

from ae_jax import models
from ae_jax.core import parallel, text_table
from ae_jax.core.errors import AEJaxError
from ae_jax.runner import command_line
from ae_jax.runner import config as config_checks

CODE_KEYS = ("code", "mean", "z")  # the bottleneck output, in order of preference
RECON_KEY = "recon"
_BATCHES = (2, 3)  # the two batch sizes traced to tell batch dimensions from fixed ones

Dim = int | str  # a fixed size, "B" (the batch), "B*k" (batch folded with a size-k axis) or "?"


@dataclasses.dataclass(frozen=True)
class Row:
  """One submodule call: '/'-joined path, module class, output shape(s) with the batch dim as "B", the
  output's numbers per example, and the module's own parameters (not its children's; 0 on repeat calls)."""

  path: str
  module: str
  shape: Any  # tuple[Dim, ...] for an array output; a tuple/dict/list of those for a pytree output
  size: int
  params: int

  @property
  def example_shape(self) -> tuple[Dim, ...] | None:
    """The output's shape without its leading batch dim, e.g. (14, 14, 8); None for pytree outputs."""
    if isinstance(self.shape, tuple) and self.shape and self.shape[0] == "B":
      return self.shape[1:]
    return None


@dataclasses.dataclass(frozen=True)
class Report:
  """What `inspect_model` found. `input_shape` is per example; output shapes keep the batch dim as "B" (so a
  code folded as [B*T, Z] stays visible); every size is numbers per example."""

  model: str
  rows: list[Row]
  input_shape: tuple[int, ...]
  input_size: int
  outputs: dict[str, tuple[tuple[Dim, ...], int]]  # every array output: (shape with "B", numbers per example)
  code_key: str | None
  code_shape: tuple[Dim, ...] | None
  code_size: int | None
  code_dtype: str | None
  recon_shape: tuple[Dim, ...] | None
  recon_size: int | None
  ratio: float | None  # input numbers / code numbers, per example
  step_ratio: float | None  # F / Z for a sequence model: input [B, T, F], code [B, T, Z]
  total_params: int
  other_variables: dict[str, int]  # non-parameter collections (e.g. batch_stats): numbers in each
  latent_grid: tuple[int, ...] | None = None  # spatial positions of the code (an image model's latent map)
  codebooks: tuple[int, ...] | None = None  # quantized models: codes of each codebook a position uses
  bits: float | None = None  # quantized models: bits per example, positions x sum(log2 K)
  input_bits: int | None = None  # input values x bits per stored value (8 for uint8 pixels), when known


# ----------------------------------------------------------------------------- tracing


def _trace(
  model: nn.Module, input_shape: tuple[int, ...], batch: int, dtype: str = "float32"
) -> tuple[list, Any, Any]:
  """Abstract (calls, outputs, variables) of `model.init_with_output` on [batch, *input_shape] of `dtype`.

  calls: [(path, method, module class name, abstract output)] in call order (parents before children); a
  module's nested calls of its own methods (its __call__ calling self.encode) are folded into the outer one.
  """
  calls: list[list] = []
  stack: list[tuple[str, ...]] = []

  def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    path = tuple(context.module.path)
    if context.method_name == "setup" or not path or (stack and stack[-1] == path):
      return next_fun(*args, **kwargs)
    entry = [path, context.method_name, type(context.module).__name__, None]
    calls.append(entry)  # reserve the slot now so parents come before their children
    stack.append(path)
    try:
      entry[3] = next_fun(*args, **kwargs)
    finally:
      stack.pop()
    return entry[3]

  def init(x: jax.Array) -> tuple[Any, Any]:
    key = jax.random.key(0)
    rngs = {"params": key, "sample": key, "dropout": key}
    with nn.intercept_methods(interceptor):
      return model.init_with_output(rngs, x, train=False, **models.model_inputs(model, {"x": x}))

  # with_named_axis: models with cross-device statistics (psum over the device axis) trace outside pmap too
  init = parallel.with_named_axis(init)
  outputs, variables = jax.eval_shape(init, jax.ShapeDtypeStruct((batch, *input_shape), jnp.dtype(dtype)))
  return [tuple(c) for c in calls], outputs, variables


def _dims(small: Sequence[int], large: Sequence[int]) -> tuple[Dim, ...]:
  """Labels each dim of one output traced at batch 2 (`small`) and 3 (`large`): fixed, B, B*k or '?'."""
  out: list[Dim] = []
  b0, b1 = _BATCHES
  for s, big in zip(small, large, strict=True):
    if s == big:
      out.append(int(s))
    elif s * b1 == big * b0 and s % b0 == 0:
      out.append("B" if s == b0 else f"B*{s // b0}")
    else:
      out.append("?")
  return tuple(out)


def _leaf_size(small: Any, large: Any) -> int:
  """Numbers per example: the growth per added example, or the whole size when it does not grow."""
  n0, n1 = math.prod(small.shape), math.prod(large.shape)
  return (n1 - n0) // (_BATCHES[1] - _BATCHES[0]) if n1 != n0 else n0


def _shape_tree(small: Any, large: Any) -> Any:
  """The labelled shape of one (possibly pytree) output; None leaves (no output) stay None."""
  if hasattr(small, "shape"):
    return _dims(small.shape, large.shape)
  if isinstance(small, dict):
    return {k: _shape_tree(small[k], large[k]) for k in small}
  if isinstance(small, (tuple, list)):
    return tuple(_shape_tree(a, b) for a, b in zip(small, large, strict=True))
  return None


def _size(small: Any, large: Any) -> int:
  pairs = zip(jax.tree.leaves(small), jax.tree.leaves(large), strict=True)
  return sum(_leaf_size(a, b) for a, b in pairs if hasattr(a, "shape"))


def _count(tree: Any) -> int:
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree))


def _own_params(params: Any, path: tuple[str, ...], modules: set[tuple[str, ...]]) -> int:
  """Parameters stored directly in module `path`'s scope, excluding those of its child modules."""
  node = params
  for name in path:
    if not isinstance(node, dict) or name not in node:
      return 0
    node = node[name]
  if not isinstance(node, dict):
    return 0
  child_roots = {m[len(path)] for m in modules if len(m) > len(path) and m[: len(path)] == path}
  return sum(_count(v) for k, v in node.items() if k not in child_roots)


def inspect_model(
  model: nn.Module, input_shape: tuple[int, ...], dtype: str = "float32", bits_per_value: int | None = None
) -> Report:
  """Shapes, sizes and parameter counts of `model` on inputs [B, *input_shape] of `dtype` (int32 for
  token models), without any compute; for quantized models also the latent grid, the tokens and the bits
  per example (positions x sum of log2 of each codebook's size), compared with `bits_per_value` bits per
  input value when given.

  `model(x, train=False)` must return a dict of outputs (the repository's convention); the code is the
  first of CODE_KEYS it contains, the reconstruction outputs["recon"]. Parameter counts cover the "params"
  collection; every parameter is attributed to exactly one row, so the rows' counts sum to the total.
  """
  input_shape = tuple(int(d) for d in input_shape)
  (calls0, out0, vars0), (calls1, out1, _) = (_trace(model, input_shape, b, dtype) for b in _BATCHES)
  if [c[0] for c in calls0] != [c[0] for c in calls1]:
    raise ValueError("the model calls different submodules at batch sizes 2 and 3: cannot tell the batch dim")
  vars0 = dict(vars0)
  params = vars0.pop("params", {})
  modules = {c[0] for c in calls0}
  rows, seen = [], set()
  for (path, method, kind, small), (*_, large) in zip(calls0, calls1, strict=True):
    own = 0 if path in seen else _own_params(params, path, modules)
    name = "/".join(path) + ("" if method == "__call__" else f".{method}")
    name += " (again)" if path in seen else ""
    seen.add(path)
    rows.append(Row(name, kind, _shape_tree(small, large), _size(small, large), own))
  total = _count(params)
  root_own = _own_params(params, (), modules)
  if root_own:
    rows.append(Row("(the model's own)", type(model).__name__, None, 0, root_own))
  rest = total - sum(r.params for r in rows)
  if rest:  # e.g. parameters of lifted transforms stored under names that no call reported
    rows.append(Row("(unattributed)", "-", None, 0, rest))

  if not isinstance(out0, dict):
    raise ValueError(f"{type(model).__name__} returns {type(out0).__name__}, not a dict of named outputs")
  outputs = {
    k: (_dims(v.shape, out1[k].shape), _leaf_size(v, out1[k])) for k, v in out0.items() if hasattr(v, "shape")
  }
  code_key = next((k for k in CODE_KEYS if k in outputs), None)
  code_shape, code_size = outputs[code_key] if code_key else (None, None)
  recon_shape, recon_size = outputs.get(RECON_KEY, (None, None))
  input_size = math.prod(input_shape)
  # A sequence model: input [B, T, F] and code [B, T, Z] share their time axis.
  seq = len(input_shape) == 2 and code_shape is not None and code_shape[:2] == ("B", input_shape[0])
  step_ratio = input_shape[1] / code_shape[2] if seq and len(code_shape) == 3 else None
  grid = codebooks = bits = None
  if "quantized" in models.abilities(model) and "indices" in outputs:
    codebooks = tuple(model.codebooks())
    shape = tuple(outputs["indices"][0][1:])  # [h, w] or, with several codebooks, [h, w, S]
    grid = shape[:-1] if len(codebooks) > 1 else shape
    bits = math.prod(grid) * sum(math.log2(k) for k in codebooks)
  elif len(input_shape) == 3 and code_shape is not None and len(code_shape) == 4:
    grid = tuple(code_shape[1:3])  # an image model's [B, h, w, D] latent map
  return Report(
    model=type(model).__name__,
    rows=rows,
    input_shape=input_shape,
    input_size=input_size,
    outputs=outputs,
    code_key=code_key,
    code_shape=code_shape,
    code_size=code_size,
    code_dtype=str(out0[code_key].dtype) if code_key else None,
    recon_shape=recon_shape,
    recon_size=recon_size,
    ratio=input_size / code_size if code_size else None,
    step_ratio=step_ratio,
    total_params=total,
    other_variables={k: _count(v) for k, v in vars0.items()},
    latent_grid=grid,
    codebooks=codebooks,
    bits=bits,
    input_bits=input_size * bits_per_value if bits_per_value else None,
  )


# ----------------------------------------------------------------------------- formatting


def _fmt_shape(shape: Any) -> str:
  if shape is None:
    return "-"
  if isinstance(shape, dict):
    return "{" + ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in shape.items()) + "}"
  if shape and all(isinstance(s, tuple) or s is None for s in shape):  # a tuple of outputs
    return "(" + ", ".join(_fmt_shape(s) for s in shape) + ")"
  return "[" + ", ".join(map(str, shape)) + "]"


def _fmt_ratio(r: float) -> str:
  return str(round(r, 3))


def _fmt_size(shape: Any, size: int) -> str:
  """Numbers per example; an output with no batch dim (a codebook, tied weights) shows its whole size."""
  if shape is None:
    return "-"
  batched = any(isinstance(d, str) and d.startswith("B") for d in jax.tree.leaves(shape))
  return f"{size:,}" if batched else f"{size:,} (total)"


def format_report(report: Report) -> str:
  """Plain text (no terminal-width dependence), lines within text_table.MAX_WIDTH characters: the per-call
  table,
  then input/code/recon and the ratios."""
  body = [
    (r.path, r.module, _fmt_shape(r.shape), _fmt_size(r.shape, r.size), f"{r.params:,}") for r in report.rows
  ]
  lines = [f"{report.model} on inputs [B, {', '.join(map(str, report.input_shape))}]", ""]
  lines += text_table.columns(
    ("submodule call", "module", "output", "per example", "params"), body, {3, 4}, wrap=2
  )
  lines.append("")
  ends = [("input", "", _fmt_shape(("B", *report.input_shape)), f"{report.input_size:,}")]
  roles = {report.code_key: "the code", RECON_KEY: "reconstruction"}
  for key, (shape, size) in report.outputs.items():
    ends.append((f'outputs["{key}"]', roles.get(key, ""), _fmt_shape(shape), _fmt_size(shape, size)))
  lines += text_table.columns(("data", "role", "shape", "per example"), ends, {3}, wrap=2)
  lines.append("")
  if report.ratio is None:
    lines.append(f"compression ratio: - (the model returns none of {', '.join(CODE_KEYS)} as its code)")
  else:
    lines.append(
      f"compression ratio: {report.input_size:,} / {report.code_size:,} = {_fmt_ratio(report.ratio)} "
      "(input / code numbers per example)"
    )
  if report.step_ratio is not None:
    (t, f), z = report.input_shape, report.code_shape[2]
    lines.append(
      f"per time step:     {f:,} / {z:,} = {_fmt_ratio(report.step_ratio)} (input / code numbers per step, "
      f"{t:,} steps)"
    )
  if report.latent_grid is not None:
    grid = " x ".join(map(str, report.latent_grid))
    depth = (
      f", {report.code_shape[-1]:,} numbers each" if report.code_shape and len(report.code_shape) == 4 else ""
    )
    lines.append(f"latent grid:       {grid} = {math.prod(report.latent_grid):,} positions{depth}")
  if report.bits is not None:
    books = " + ".join(f"log2 {k:,}" for k in report.codebooks)
    tokens = math.prod(report.latent_grid) * len(report.codebooks)
    lines.append(
      f"tokens:            {tokens:,} ({len(report.codebooks)} per position); bits per example: "
      f"{math.prod(report.latent_grid):,} x ({books}) = {report.bits:,.0f}"
    )
    if report.input_bits:
      ratio = _fmt_ratio(report.input_bits / report.bits)
      lines.append(
        f"bits ratio:        {report.input_bits:,} / {report.bits:,.0f} = {ratio} (input / code bits per "
        "example, the quantized bottleneck)"
      )
  lines.append(f"total parameters:  {report.total_params:,}")
  for name, n in report.other_variables.items():
    lines.append(f"{name + ':':18} {n:,} numbers (not parameters)")
  if report.code_dtype and not jnp.issubdtype(jnp.dtype(report.code_dtype), jnp.floating):
    lines.append(f"the code is {report.code_dtype} (discrete): the ratio counts numbers, not bits")
  if report.ratio is not None and report.ratio <= 1 and report.bits is None:
    size = "larger than" if report.ratio < 1 else "as large as"
    lines += [
      f"note: the code is {size} its input (ratio {_fmt_ratio(report.ratio)}), so by size alone the model "
      "can learn the identity;",
      "      it compresses only through other constraints: a VAE's KL term, sparsity, noise.",
    ]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
  """The command line: parses --config (+ overrides), builds the model as training does, prints the report."""
  argv = list(sys.argv if argv is None else argv)
  if {"-h", "--help", "-help"} & set(argv[1:]):
    print(__doc__)
    return
  flag_values = flags.FlagValues()  # its own, so importing this module never clashes with other CLIs' flags
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (a .py with get_config()).",
    lock_config=True,
    flag_values=flag_values,
    sys_argv=argv,
  )
  usage = "python -m ae_jax.runner.bottleneck --config FILE.py[:ARG] [--config.KEY=VALUE ...]"
  rest = command_line.parse_flags_or_exit(argv, flag_values, usage)
  if len(rest) > 1:
    sys.exit(f"error: unexpected arguments {rest[1:]}; {usage}")
  if flag_values.config is None:
    sys.exit(f"error: --config is required; {usage}")

  config = flag_values.config
  try:
    report = inspect_config(config)
  except AEJaxError as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(format_report(report))


def inspect_config(config: Any) -> Report:
  """The report of the model a config trains, built exactly as training builds it (shapes only)."""
  from ae_jax import data  # imported here: train pulls in Orbax, tfds and grain
  from ae_jax.training import train

  config_checks.check_config(config, num_processes=1, local_devices=1)
  example = data.example_spec(config.data)
  given = config.model.get("input_shape")
  input_shape = tuple(given) if given is not None else example.shape
  model, *_ = train.build(config, input_shape)
  spec = data.get_spec(config.data.name)
  bits = 1 if config.data.get("binarize") == "dynamic" else spec.bits_per_value
  return inspect_model(model, input_shape, example.dtype, bits)


if __name__ == "__main__":
  main()
