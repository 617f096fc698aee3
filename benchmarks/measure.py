"""The measurements of the benchmark suite (`python -m benchmarks.run`), one function each.

Everything here runs inside the suite's worker processes (see `benchmarks/run.py` for the method of each
number). The models are the shipped configs (`MODELS`), built by the trainer's own code:
`experiment.setup` and the step the trainer dispatches, `experiment.pmapped_train_steps`. `COMPARISONS`
pairs each PyTorch baseline
(`benchmarks/torch_models.py`) with the config of its ae-jax counterpart.

    bench = measure.build(measure.shipped_config("conv_ae"))
    measure.time_step(bench, k=1, steps=20, rounds=5, budget=15.0)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import data
from ae_jax.core import parallel
from ae_jax.core.errors import DataNotFoundError
from ae_jax.runner import experiment, loop
from ae_jax.training import device_input, train


class Spec(NamedTuple):
  """A benchmarked model: experiments/configs/<module>.py's get_config(arg) with dotted `overrides`, and
  the example shape its stand-in data has when the real data, from which the shape is read, is absent."""

  module: str
  arg: str | None = None
  overrides: tuple[tuple[str, Any], ...] = ()
  shape: tuple[int, ...] | None = None
  smoke: tuple[tuple[str, Any], ...] = ()  # dotted overrides of a --smoke run: a tiny shape, the same paths


# The VQGAN of a --smoke run: its step's code paths (the taming blocks but Down/Upsample, the EMA codebook,
# LPIPS's VGG unchanged, the PatchGAN with BatchNorm, the adaptive weight) at a size that compiles fast.
VQGAN_TINY = (
  ("model.ch", 8),
  ("model.ch_mult", (1,)),
  ("model.norm_groups", 4),
  ("model.attn_resolutions", ()),
  ("model.z_channels", 4),
  ("model.quantizer.num_codes", 16),
  ("model.quantizer.code_dim", 4),
  ("adversarial.discriminator.ndf", 8),
  ("adversarial.discriminator.n_layers", 1),
)
MODELS: dict[str, Spec] = {
  "mlp_ae": Spec("mlp_ae_fashion_mnist"),
  "conv_ae": Spec("conv_ae_fashion_mnist"),
  "tied_ae": Spec("tied_ae_fashion_mnist"),
  "vae_mlp": Spec("vae_mlp_fashion_mnist"),
  "vae_conv": Spec("vae_conv_fashion_mnist"),
  "vqvae": Spec("vqvae_cifar10"),
  "vqvae_fsq": Spec("vqvae_cifar10", arg="quantizer=fsq"),
  "seq_vae_conv": Spec("seq_vae_spoken_digit"),
  **{
    m: Spec("lstm_anomaly", f"power_demand,model={m}", shape=(84, 1))
    for m in ("lstm_ae_repeat", "lstm_ae_stacked", "lstm_encdec_ad", "lstm_ae_seq")
  },
  "vqgan_cifar10": Spec("vqgan_cifar10", smoke=VQGAN_TINY),
}
VQ_UNIFORM = (("model.quantizer.codebook_init", "uniform"), ("model.quantizer.dead_code_threshold", 0.0))
DISC_NOW = (("adversarial.start", 0),)
LSTM_ECG5000, CONSTANT = "ecg5000,model=lstm_ae_stacked", (("optimizer.schedule", "constant"),)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A PyTorch baseline and the ae-jax config it is timed against (same batch, optimizer, loss).

  model: the MODELS entry whose config is the start; arg: another get_config argument; overrides: dotted
  config keys; shipped_too: also time the shipped config itself in the same interleaved rounds; shape: as
  in Spec.
  """

  label: str
  baseline: str
  batch: int
  model: str
  arg: str | None = None
  overrides: tuple[tuple[str, Any], ...] = ()
  shipped_too: bool = False
  shape: tuple[int, ...] | None = None


COMPARISONS: tuple[Comparison, ...] = (
  Comparison("mlp_ae@128", "mlp_ae", 128, "mlp_ae"),
  Comparison("mlp_ae@256", "mlp_ae", 256, "mlp_ae"),
  Comparison("conv_ae", "conv_ae", 128, "conv_ae"),
  Comparison("vqvae", "vqvae", 32, "vqvae", overrides=VQ_UNIFORM, shipped_too=True),
  Comparison(
    "lstm_ae_stacked", "lstm_ae_stacked", 32, "lstm_ae_stacked", LSTM_ECG5000, CONSTANT, shape=(140, 1)
  ),
  Comparison("seq_vae_conv", "seq_vae_conv", 64, "seq_vae_conv"),
  # the discriminator active from step 0 (as the baseline: after taming's disc_start); the shipped config
  # (k-means++ codebook, re-seeding, start 2,000) in the same rounds: its step computes the same either way
  Comparison("vqgan", "vqgan", 32, "vqgan_cifar10", overrides=(*VQ_UNIFORM, *DISC_NOW), shipped_too=True),
)

# x [batch, ...] of ae-jax (channels last, a torch tensor) -> the baseline's layout (torch_models' docstring)
TORCH_LAYOUT: dict[str, Callable[[Any], Any]] = {
  "mlp_ae": lambda x: x.flatten(1),
  "conv_ae": lambda x: x.permute(0, 3, 1, 2),
  "vqvae": lambda x: x.permute(0, 3, 1, 2),
  "lstm_ae_stacked": lambda x: x,
  "seq_vae_conv": lambda x: x.permute(0, 2, 1),
  "vqgan": lambda x: x.permute(0, 3, 1, 2),
}
STANDIN = "benchmark_standin"


def set_path(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """config[a][b][c] = value for key "a.b.c"."""
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def shipped_config(
  name: str, arg: str | None = None, overrides: dict[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """The config of MODELS[name] (get_config(arg) when given), with its and `overrides`' dotted keys set."""
  spec = MODELS[name]
  get_config = importlib.import_module(f"experiments.configs.{spec.module}").get_config
  arg = arg or spec.arg
  config = get_config(arg) if arg else get_config()
  for key, value in {**dict(spec.overrides), **(overrides or {})}.items():
    set_path(config, key, value)
  return config


def comparison_config(comparison: Comparison) -> ml_collections.ConfigDict:
  """The ae-jax config a baseline is timed against, at the baseline's batch."""
  overrides = {**dict(comparison.overrides), "batch_size": comparison.batch}
  return shipped_config(comparison.model, comparison.arg, overrides)


def example_spec(config_data: ml_collections.ConfigDict, shape: tuple[int, ...] | None) -> data.ExampleSpec:
  """config_data's example (`data.example_spec`); a float32 example of `shape` when the shape is read
  from data that is absent (DataNotFoundError is raised when no `shape` is given)."""
  try:
    return data.example_spec(config_data)
  except DataNotFoundError:
    if shape is None:
      raise
    return data.ExampleSpec(tuple(shape))


def example_shape(config_data: ml_collections.ConfigDict, shape: tuple[int, ...] | None) -> tuple[int, ...]:
  """The example shape of config_data's dataset; `shape` when it is read from data that is absent."""
  return tuple(example_spec(config_data, shape).shape)


def _baseline_module(name: str) -> Any:
  """The module of PyTorch baseline `name`: torch_vqgan (the VQGAN step) or torch_models (the others)."""
  from benchmarks import torch_models, torch_vqgan

  return torch_vqgan if name in torch_vqgan.NAMES else torch_models


def make_baseline(comparison: Comparison, config: ml_collections.ConfigDict) -> Any:
  """The comparison's PyTorch baseline at config.batch_size; the VQGAN's built from `config` itself
  (`torch_vqgan.options_from_config`: its architecture, losses and optimizers)."""
  module = _baseline_module(comparison.baseline)
  if module.__name__.endswith("torch_vqgan"):
    shape = example_shape(config.data, comparison.shape or MODELS[comparison.model].shape)
    return module.make(config.batch_size, module.options_from_config(config, shape))
  return module.make(comparison.baseline, config.batch_size)


def check_counterpart(config: ml_collections.ConfigDict, comparison: Comparison) -> None:
  """Raises if `config` builds another model than torch_models.JAX_COUNTERPARTS (torch_vqgan's for the
  VQGAN) names for the baseline; the VQGAN's losses and optimizers must be the baseline's defaults."""
  module = _baseline_module(comparison.baseline)
  name, options, shape = module.JAX_COUNTERPARTS[comparison.baseline]
  flat = {
    f"{k}.{sub}" if isinstance(v, dict) else k: x
    for k, v in options.items()
    if k != "input_shape"
    for sub, x in (v.items() if isinstance(v, dict) else [(None, v)])
  }
  different = {k: v for k, v in flat.items() if _get_path(config.model, k) != v}
  baseline = comparison.baseline
  example = example_shape(config.data, comparison.shape or MODELS[comparison.model].shape)
  if config.model.name != name or different or tuple(example) != tuple(shape):
    raise ValueError(f"{baseline}: the ae-jax config differs from its counterpart ({different}, {example})")
  if (
    hasattr(module, "options_from_config") and module.options_from_config(config, example) != module.Options()
  ):
    raise ValueError(f"{baseline}: the ae-jax config's losses or optimizers differ from the baseline's")


def _get_path(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """config's value at a dotted key ("quantizer.num_codes"); None when absent."""
  for part in dotted.split("."):
    config = config.get(part) if config is not None else None
  return config


# ----------------------------------------------------------------------------- data


def _load_standin(d: ml_collections.ConfigDict) -> data.Dataset:
  """Random examples of the configured shape and dtype (uniform [0, 1) floats, tokens below vocab_size),
  with a prefix mask when `masked`; in memory."""
  shape, dtype = tuple(d.shape), np.dtype(d.dtype)

  def split(n: int, seed: int) -> data.ArraySource:
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
      x = rng.random((n, *shape), np.float32).astype(dtype)
    else:
      x = rng.integers(0, max(int(d.vocab_size), 2), (n, *shape)).astype(dtype)
    arrays = {"x": x, "label": np.zeros(n, np.int32)}
    if d.masked:
      lengths = rng.integers(max(shape[0] // 2, 1), shape[0] + 1, n)
      arrays["mask"] = (np.arange(shape[0])[None] < lengths[:, None]).astype(np.float32)
    return data.ArraySource(arrays)

  train_split = split(int(d.num_train), 1)
  info = data.DatasetInfo(
    data.ExampleSpec(shape, d.dtype, bool(d.masked)),
    lambda record, index: dict(record),
    variance_fn=lambda: float(np.var(train_split.arrays["x"])),
  )
  return data.Dataset(STANDIN, {"train": train_split, "test": split(int(d.num_test), 2)}, info)


data.register(
  data.DatasetSpec(
    name=STANDIN,
    load=_load_standin,
    options={
      "shape": (1,),
      "dtype": "float32",
      "masked": False,
      "vocab_size": 0,
      "num_train": 4096,
      "num_test": 256,
    },
    example=lambda d: data.ExampleSpec(tuple(d.shape), d.dtype, bool(d.masked)),
    splits=lambda d: ("train", "test"),
    provides_variance=True,
    description="random examples of a given shape and dtype (benchmark stand-in for absent data)",
  )
)


def standin_data(
  config_data: ml_collections.ConfigDict, num_train: int, shape: tuple[int, ...] | None = None
) -> ml_collections.ConfigDict:
  """config.data of a synthetic stand-in with the same example: the `synthetic` image dataset (with the
  config's scale and binarisation) for uint8 image data, else random examples of the same shape and dtype
  (of `shape` when the shape is read from data that is absent)."""
  spec = data.get_spec(config_data.name)
  example = example_spec(config_data, shape)
  if spec.bits_per_value == 8 and spec.drawable and len(example.shape) == 3:
    options = {k: config_data[k] for k in ("scale", "binarize") if k in config_data}
    return data.data_config("synthetic", shape=tuple(example.shape), num_train=num_train, **options)
  return data.data_config(
    STANDIN, shape=tuple(example.shape), dtype=example.dtype, masked=example.masked, num_train=num_train
  )


def resolve_data(
  config: ml_collections.ConfigDict, mode: str, num_train: int, shape: tuple[int, ...] | None = None
) -> str:
  """Points config.data at the real dataset ("real"; "auto" when it opens locally) or at a stand-in
  ("synthetic", or "auto" when it does not, for whatever reason: the report names it; `shape` as in
  standin_data). Returns what was used."""
  name = config.data.name
  if mode in ("auto", "real"):
    try:
      data.get_dataset(config.data)
      return f"{name} (real)"
    except Exception as e:  # noqa: BLE001 - any reason to fall back is named in the report
      if mode == "real":
        raise
      reason = f"{type(e).__name__}: {' '.join(str(e).split())[:100]}"
  else:
    reason = "--data synthetic"
  config.data = standin_data(config.data, num_train, shape)
  return f"stand-in '{config.data.name}' for {name} ({reason})"


# ----------------------------------------------------------------------------- the trainer's step


@dataclasses.dataclass(frozen=True)
class Bench:
  """A config built as the trainer builds it (`experiment.setup`) and its pmapped step
  (`experiment.pmapped_train_steps`, the state donated at every call)."""

  experiment: experiment.Experiment
  p_train: Callable

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.experiment.config

  @property
  def dataset(self) -> data.Dataset:
    return self.experiment.dataset

  @property
  def state(self) -> train.TrainState:
    return self.experiment.state

  @property
  def num_params(self) -> int:
    return self.experiment.num_params


def build(config: ml_collections.ConfigDict) -> Bench:
  """`experiment.setup(config)` and the trainer's pmapped step of it."""
  exp = experiment.setup(config)
  return Bench(exp, experiment.pmapped_train_steps(exp))


def host_batches(bench: Bench) -> Iterator[dict[str, np.ndarray]]:
  """The trainer's host-pipeline training batches of the bench's config, from step 0."""
  return device_input.host_batches(bench.config, bench.dataset)


def dispatch(batches: Iterator[dict[str, np.ndarray]], k: int) -> Any:
  """The next k host batches stacked and placed on the devices, as the trainer's Prefetcher does."""
  return parallel.shard(parallel.stack_steps([next(batches) for _ in range(k)], jax.local_device_count()))


def plan(one: float, budget: float, rounds: int, per_round: int, minimum: int = 3) -> tuple[int, int]:
  """(rounds, samples per round) that fit `budget` seconds of samples taking `one` second each: at most
  rounds x per_round samples, at least `minimum`."""
  total = max(minimum, min(rounds * per_round, int(budget / max(one, 1e-9))))
  rounds = min(rounds, total)
  return rounds, max(1, total // rounds)


class StepTimer:
  """The pmapped step of a bench at K steps per dispatch, on a replicated state and one dispatch of the
  trainer's batches kept on the devices; the state is donated and replaced at every call."""

  def __init__(self, bench: Bench, k: int, batches: Iterator[dict[str, np.ndarray]] | None = None):
    self.bench, self.k = bench, k
    self.batch = dispatch(batches or host_batches(bench), k)
    self.rstate = parallel.replicate(bench.state)

  def call(self) -> float:
    """Seconds of one dispatch, waited for with jax.block_until_ready."""
    start = time.perf_counter()
    self.rstate, metrics = self.bench.p_train(self.rstate, self.batch)
    jax.block_until_ready((self.rstate, metrics))
    return time.perf_counter() - start

  def round(self, n: int) -> list[float]:
    """n dispatches: seconds per optimisation step of each."""
    return [self.call() / self.k for _ in range(n)]

  def flops(self) -> float | None:
    """FLOPs of one dispatch from the compiled step's cost_analysis() (the compilation is cached)."""
    analysis = self.bench.p_train.lower(self.rstate, self.batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def summary_ms(samples: list[list[float]]) -> dict[str, Any]:
  """Median over every sample (seconds) in ms, the per-round medians and the count."""
  flat = [s for r in samples for s in r]
  return {
    "ms": 1e3 * statistics.median(flat),
    "round_medians_ms": [1e3 * statistics.median(r) for r in samples],
    "samples": len(flat),
  }


def time_step(bench: Bench, k: int, steps: int, rounds: int, budget: float) -> dict[str, Any]:
  """Compile seconds (the first dispatch), then the median step time over rounds of timed dispatches."""
  timer = StepTimer(bench, k)
  compile_s = timer.call()
  one = timer.call()
  r, n = plan(one, budget, rounds, math.ceil(steps / k))
  result = {"k": k, "compile_s": compile_s, **summary_ms([timer.round(n) for _ in range(r)])}
  if k == 1:
    result["flops"] = timer.flops()
  return result


def time_pipeline(bench: Bench, k: int, steps: int, rounds: int, budget: float) -> dict[str, Any]:
  """Batches per second of pipeline.train_batches + parallel.stack_steps + placement on the devices."""
  batches = host_batches(bench)
  jax.block_until_ready(dispatch(batches, k))  # the reader's start
  start = time.perf_counter()
  jax.block_until_ready(dispatch(batches, k))
  r, n = plan(time.perf_counter() - start, budget, rounds, math.ceil(steps / k))
  rates = []
  for _ in range(r):
    start = time.perf_counter()
    for _ in range(n):
      jax.block_until_ready(dispatch(batches, k))
    rates.append(n * k / (time.perf_counter() - start))
  return {"k": k, "batches_per_s": statistics.median(rates), "dispatches": r * n}


def loop_steps(step_s: float, budget: float, most: int, log_every: int, k: int) -> int:
  """Steps of a timed trainer run: what fits `budget` at `step_s`, at most `most`, at least 3 dispatches;
  whole log intervals when longer than one, a multiple of k."""
  n = min(most, int(budget / max(step_s, 1e-9)))
  n = n // log_every * log_every if n > log_every else n
  return max(3 * k, math.ceil(n / k) * k)


def loop_config(
  config: ml_collections.ConfigDict, steps: int, k: int, intervals: dict[str, int] | None = None
) -> ml_collections.ConfigDict:
  """The config for a timed trainer run: `steps` steps at K per dispatch, no evaluators (and so no
  keep_best), logging and asynchronous checkpoints as configured (or at `intervals`)."""
  c = copy.deepcopy(config)
  c.total_steps, c.steps_per_dispatch = steps, k
  c.evals, c.keep_best = ml_collections.ConfigDict(), ""
  for key, value in (intervals or {}).items():
    c[key] = value
  return c


def time_loop(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Wall time per step of loop.train_and_evaluate on a temporary workdir, from its logged
  examples_per_sec: each log row covers the steps since the previous one (the first dispatch, which
  compiles, excluded), so the time per step is their summed elapsed time over their summed steps. With
  more than one log interval the first is left out too: with K > 1 it compiles the shorter dispatch that
  ends at a log step (100 = 12 x 8 + 4), which later intervals reuse."""
  k = int(config.steps_per_dispatch)
  sizes = list(parallel.dispatch_sizes(0, config.total_steps, k, (config.log_every, config.checkpoint_every)))
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = loop.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
  previous, timed_steps, elapsed = sizes[0], 0, 0.0
  logged = [row for row in rows if row.get("examples_per_sec")]
  if len(logged) > 1:
    previous, logged = logged[0]["step"], logged[1:]
  timed_from = previous
  for row in logged:
    steps = row["step"] - previous
    timed_steps, elapsed = (
      timed_steps + steps,
      elapsed + steps * config.batch_size / row["examples_per_sec"],
    )
    previous = row["step"]
  every = config.checkpoint_every
  return {
    "k": k,
    "ms": 1e3 * elapsed / timed_steps,
    "timed_steps": timed_steps,
    "checkpoints_timed": sum(
      1 for s in range(timed_from + 1, config.total_steps) if every and s % every == 0
    ),
    "first_dispatch_s": float(summary["compile_seconds"]),
    "wall_s": wall,
    "input": "device" if summary["input"].startswith("input: device-resident") else "host",
    "input_line": summary["input"],
    "input_bytes_per_step": summary["input_bytes_placed"] / config.total_steps,
  }


def matmul_peak(n: int, repeats: int) -> dict[str, Any]:
  """This machine's float32 matmul rate: the median time of jnp.dot of two n x n matrices, as FLOP/s."""
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.float32) for i in range(2))
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {"n": n, "repeats": repeats, "ms": 1e3 * seconds, "flops_per_s": 2 * n**3 / seconds}


def interleaved_seconds(calls: Mapping[Any, Callable[[], Any]], rounds: int) -> dict[Any, list[float]]:
  """{key: [seconds]} of `rounds` rounds that each run every call of `calls` once, in turn (interleaved, so
  load that comes and goes falls on all of them), each waited for with jax.block_until_ready."""
  times: dict[Any, list[float]] = {key: [] for key in calls}
  for _ in range(rounds):
    for key, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[key].append(time.perf_counter() - start)
  return times


def peak_rss_mb() -> float:
  """This process's peak resident memory so far (getrusage ru_maxrss, KiB on Linux), in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- PyTorch


def time_torch(baseline: Any, n: int) -> list[float]:
  """Seconds of n training steps of a torch_models.Baseline, each synchronised by reading its loss."""
  times = []
  for _ in range(n):
    start = time.perf_counter()
    float(baseline.step())
    times.append(time.perf_counter() - start)
  return times


def torch_checkpoint(baseline: Any) -> dict[str, Any]:
  """What the PyTorch loop saves: the baseline's model and optimizer (the VQGAN's: both players, both
  optimizers and its weight EMA)."""
  if hasattr(baseline, "checkpoint_state"):
    return baseline.checkpoint_state()
  return {"model": baseline.model.state_dict(), "optimizer": baseline.optimizer.state_dict()}


def time_torch_loop(baseline: Any, bench: Bench, steps: int) -> dict[str, Any]:
  """A plain PyTorch training loop over the bench's training records and preprocessing: a DataLoader
  (shuffled, in the main process) of its examples, each batch put in the baseline's layout, one step, the
  loss read every log_every steps, model and optimizer saved with torch.save every checkpoint_every
  steps. Milliseconds per step after the first."""
  import torch

  source, info, config = bench.dataset.split("train"), bench.dataset.info, bench.config

  class Examples(torch.utils.data.Dataset):
    def __len__(self) -> int:
      return len(source)

    def __getitem__(self, i: int) -> torch.Tensor:
      return torch.from_numpy(np.asarray(info.preprocess(source[i], i)["x"]))

  loader = torch.utils.data.DataLoader(Examples(), batch_size=config.batch_size, shuffle=True, drop_last=True)
  batches = (x for _ in range(steps) for x in loader)
  layout, device, every = TORCH_LAYOUT[baseline.name], baseline.inputs.device, config.checkpoint_every
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    for step in range(1, steps + 1):
      baseline.inputs = layout(next(batches)).contiguous().to(device, non_blocking=True)
      loss = baseline.step()
      if step % config.log_every == 0 or step == steps:
        float(loss)
      if every and step % every == 0:
        torch.save(torch_checkpoint(baseline), os.path.join(workdir, "checkpoint.pt"))
      if step == 1:
        start = time.perf_counter()
  return {"ms": 1e3 * (time.perf_counter() - start) / (steps - 1), "timed_steps": steps - 1}
