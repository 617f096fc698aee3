"""Sampling a trained stage-two prior (a model with the "code_prior" ability: `ar_prior`, `maskgit_prior`,
`pixelcnn_prior`) and decoding through its frozen stage one.

    prior = stage_one.load_run("runs/prior_ar")
    tokens = sample_tokens(prior, 64, seed=0, options=SampleOptions(temperature=0.9, top_k=50))
    images = tokenizer_of(prior).decode_codes(tokens)

Example i is drawn from its own key fold_in(PRNGKey(seed), i), `per_device` examples at a time on each
local device (one vmapped sampler per example, the prior's `draw`: `sample_cached` for the AR
transformer, `sample_autoregressive` for the PixelCNN, or `maskgit_decode` with `steps` iterations), so
the samples of a seed do not depend on how many devices share the work: each device runs the same program
on the same examples' keys (tested on 1 and 8 devices).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax import models
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.generation import stage_one
from ae_jax.generation.sampling import GUIDANCE_SCHEDULES, check_sampling_options
from ae_jax.generation.transformer import check_guidance


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """How to draw: temperature (< 1e-5: greedy), top_k (0: off), top_p (1: off); MaskGIT's decoding
  iterations `steps` and `choice_temperature`; `label` (class-conditional priors: the class of every
  sample, or "all" for the classes in turn, sample i of class i % num_classes; None for unconditional
  ones); `guidance` W, classifier-free guidance of a prior trained with class_dropout > 0 (the logits
  uncond + W (cond - uncond); 1: the conditional prior, 0: the null-class prior) and its
  `guidance_schedule` over the sampling order ("constant", or "linear" from 1 at the first position to W
  at the last: `sampling.guidance_weights`; the autoregressive priors)."""

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  steps: int = 8
  choice_temperature: float = 4.5
  label: int | str | None = None
  guidance: float = 1.0
  guidance_schedule: str = "constant"

  def labels(self, index: np.ndarray, num_classes: int) -> np.ndarray:
    """The class of samples `index` int [n]: int32 [n] (-1: unconditional)."""
    if self.label is None:
      return np.full(index.shape, -1, np.int32)
    if self.label == "all":
      return (index % num_classes).astype(np.int32)
    return np.full(index.shape, int(self.label), np.int32)


def refuse_unread(prior: stage_one.Run, given: Collection[str], num: int) -> None:
  """ConfigError (one line) for a sampling option the user set (`given`: `SampleOptions` field names) that
  this prior's model does not read (its class attribute `sampling_options`), or for num < 1."""
  reads = type(prior.model).sampling_options
  unused = [name for name in given if name not in reads]
  if unused:
    raise ConfigError(
      f"--{unused[0]} is not an option of this prior ('{prior.config.model.name}'); it reads "
      + ", ".join(f"--{n}" for n in reads)
    )
  if num < 1:
    raise ConfigError(f"--num must be >= 1, got {num}")


def check_options(
  prior: stage_one.Run, options: SampleOptions, num: int, *, given: Collection[str] = ()
) -> None:
  """ConfigError (one line) for options this prior cannot use or values out of range; `given`: the
  options the user set (an option the prior does not read is refused, not ignored)."""
  model = prior.model
  if "code_prior" not in models.abilities(model):
    priors = models.with_ability("code_prior")
    raise ConfigError(
      f"{prior.workdir} is a '{prior.config.model.name}' run, not a prior over codes ({', '.join(priors)})"
    )
  refuse_unread(prior, given, num)
  if options.temperature < 0:
    raise ConfigError(f"--temperature must be >= 0 (0: greedy), got {options.temperature}")
  check_sampling_options(options.temperature, options.top_k, options.top_p)
  if options.steps < 1:
    raise ConfigError(f"--steps must be >= 1, got {options.steps}")
  if model.num_classes and options.label is None:
    raise ConfigError(
      f"this prior is class-conditional ({model.num_classes} classes): pass --label C, or --label all"
    )
  if options.label is not None and not model.num_classes:
    raise ConfigError("--label needs a class-conditional prior (trained with the config's ,conditional)")
  if options.label is not None and options.label != "all":
    if isinstance(options.label, str) and not options.label.lstrip("-").isdigit():
      raise ConfigError(f"--label must be a class id or 'all', got '{options.label}'")
    if not 0 <= int(options.label) < model.num_classes:
      raise ConfigError(f"--label must be in [0, {model.num_classes}) or 'all', got {options.label}")
  if options.guidance_schedule not in GUIDANCE_SCHEDULES:
    raise ConfigError(
      f"--guidance_schedule must be one of {list(GUIDANCE_SCHEDULES)}, got '{options.guidance_schedule}'"
    )
  if options.guidance_schedule != "constant" and options.guidance == 1.0:
    raise ConfigError("--guidance_schedule linear ramps the weight from 1 to --guidance W: pass W != 1")
  check_guidance(
    prior.config.model.name,
    options.guidance,
    model.num_classes,
    getattr(model, "class_dropout", 0.0),
    given="guidance" in given,
  )


def _sampler(model: Any, options: SampleOptions) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """(variables, keys [b], labels [b]) -> tokens int32 [b, L], one sampler per example (the prior's
  `draw`, vmapped)."""

  def one(variables: Any, key: jax.Array, label: jax.Array) -> jax.Array:
    labels = label[None] if model.num_classes else None
    return model.draw(variables, key, labels, options)[0]

  return lambda variables, keys, labels: jax.vmap(one, in_axes=(None, 0, 0))(variables, keys, labels)


def sample_tokens(
  prior: stage_one.Run,
  num: int,
  *,
  seed: int = 0,
  options: SampleOptions = SampleOptions(),
  per_device: int = 16,
  devices: Sequence[jax.Device] | None = None,
  progress: Callable[[int], None] | None = None,
) -> np.ndarray:
  """`num` token sequences int32 [num, L] from a prior run: example i from fold_in(PRNGKey(seed), i),
  `per_device` at a time on each of `devices` (default: the local devices). `progress(n)` is called
  with the number of examples done after each round."""
  check_options(prior, options, num)
  devices = tuple(devices or jax.local_devices())
  fn = jax.pmap(_sampler(prior.model, options), in_axes=(0, 0, 0), devices=devices)
  variables = parallel.replicate(prior.variables, devices)
  per_round = per_device * len(devices)
  rounds = math.ceil(num / per_round)
  base = jax.random.PRNGKey(seed)
  out = []
  for r in range(rounds):
    index = np.arange(r * per_round, (r + 1) * per_round, dtype=np.int32)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(index))
    keys = np.asarray(keys).reshape(len(devices), per_device, *keys.shape[1:])
    labels = options.labels(index, prior.model.num_classes).reshape(len(devices), per_device)
    tokens = np.asarray(
      jax.device_get(fn(variables, parallel.shard(keys, devices), parallel.shard(labels, devices)))
    )
    out.append(tokens.reshape(per_round, -1))
    if progress is not None:
      progress(min((r + 1) * per_round, num))
  return np.concatenate(out)[:num]


def tokenizer_of(prior: stage_one.Run) -> stage_one.StageOne:
  """The frozen stage one a prior run was trained on (its config.data of the `codes` dataset), checked
  against the step and fingerprint the prior's config pins (`codes.pinned_stage_one`)."""
  from ae_jax.generation import codes

  data = prior.config.data
  if data.get("name") != "codes":
    raise ConfigError(
      f"{prior.workdir} was not trained on the 'codes' dataset (config.data.name='{data.name}')"
    )
  return codes.pinned_stage_one(data, prior.workdir)
