"""Priors over a frozen VQ-VAE's codes as trainable models (stage two): `ar_prior` and `maskgit_prior`.

Both read a batch of token sequences x [B, L] int32 (the `codes` dataset: each image's code grid in raster
order, residual stages innermost) and wrap the transformers of `ae_jax.generation`; L comes from the data
(`input_shape` = (L,), set by the trainer), the vocabulary K from the stage one (the configs
experiments/configs/prior_*.py read it from the stage one's workdir).

* `ARPrior`: a causal transformer, p(x) = prod_t p(x_t | x_<t). Outputs "logits" [B, L, K] float32 and
  "code_nll" [B], -log p(x) in nats (the `code_nll` loss term); metric "bits_per_code" = the per-example
  mean of code_nll / (L ln 2).
* `MaskGITPrior`: a bidirectional transformer trained to predict masked tokens (Chang et al. 2022). In
  training and evaluation it masks each example with `random_mask` (gamma(r) of the positions for r ~ U[0,
  1)), drawn from the "sample" rng stream the train step passes; `token_mask` [B, L] bool (True = masked)
  replaces the draw (the `prior_likelihood` evaluator's fixed mask ratio). Outputs "logits", "token_mask",
  "masked_input" (the tokens the transformer read, K where masked) and "masked_code_xent" [B], the mean
  cross-entropy over an example's masked positions in nats (the `masked_code_xent` loss term; a training
  objective, not a likelihood); metric "masked_bits_per_code" = its per-example mean / ln 2.

Each metric is a function of its loss term's per-example mean, `term_metrics(means)`: the model applies it
to its batch's mean, and the `losses` evaluator to the term's exact mean over the split (padding excluded),
so test/bits_per_code is always test/code_nll / (L ln 2).

`num_classes > 0` makes either class-conditional (labels [B] in [0, num_classes)); `class_dropout` p > 0
trains it for classifier-free guidance (a label replaced by the null class, label id num_classes, with
probability p: `transformer.drop_labels`). `logits(tokens, labels)` is the transformer alone, what the
samplers (`sample_autoregressive`, `maskgit_decode`) call; `draw(variables, key, labels, options)` one
sample (the AR prior's through its key/value cache, `sample_cached`), with guidance W = options.guidance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.generation import (
  ARTransformer,
  MaskGITTransformer,
  masked_token_loss,
  maskgit_decode,
  random_mask,
  sample_autoregressive,
  token_nll,
)
from ae_jax.generation.maskgit import MASK_SCHEDULES, fixed_mask
from ae_jax.generation.transformer import check_guidance, sample_cached, with_guidance, zero_cache
from ae_jax.generation.trunk import TrunkOptions
from ae_jax.models import interface

# The sampling options an autoregressive prior reads (generate.SampleOptions' fields).
AUTOREGRESSIVE_OPTIONS = ("temperature", "top_k", "top_p", "label", "guidance", "guidance_schedule")


def _seq_len(model: str, input_shape: Sequence[int]) -> int:
  if len(input_shape) != 1:
    raise ConfigError(
      f"{model} reads token sequences [L]; got input_shape {list(input_shape)}: use the 'codes' dataset "
      "(config.data.name='codes')"
    )
  return int(input_shape[0])


class _TransformerPrior(TrunkOptions):
  """What both priors share: the options of `ae_jax.generation`' transformers and the input checks (the
  "code_prior" ability: `ae_jax.models.interface`)."""

  vocab_size: int = 512
  input_shape: Sequence[int] = (49,)
  num_classes: int = 0
  class_dropout: float = 0.0

  def _options(self) -> dict:
    if self.vocab_size < 2:
      raise ConfigError(
        f"config.model.vocab_size must be >= 2 (the stage one's codes), got {self.vocab_size}"
      )
    seq_len = _seq_len(type(self).__name__, self.input_shape)
    return dict(
      vocab_size=self.vocab_size,
      seq_len=seq_len,
      num_classes=self.num_classes,
      class_dropout=self.class_dropout,
      **self.trunk_options(),
    )

  def logits(self, tokens: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """The transformer's logits [B, L, K] float32 for tokens [B, L] (MaskGIT: K where masked); labels [B]
    are used by a class-conditional prior (num_classes > 0) and ignored by an unconditional one."""
    return self.transformer(tokens, labels=labels if self.num_classes else None, train=train)["logits"]


class Autoregressive:
  """An exact autoregressive prior over codes, for a model whose `logits(tokens, labels, train)` [B, L,
  K] read tokens[:, :t] only at position t: `__call__` gives {"logits", "code_nll" [B] (-log p(x) in
  nats), "metrics": {"bits_per_code"}}, and the "code_prior" ability: trained on `code_nll`, scored by
  it, sampled position by position."""

  objective = "code_nll"
  score = "nll"
  sampling_options = AUTOREGRESSIVE_OPTIONS

  def __call__(
    self, x: jax.Array, *, train: bool = False, labels: jax.Array | None = None
  ) -> dict[str, jax.Array]:
    logits = self.logits(x, labels, train)
    nll = token_nll(logits, x)
    return {"logits": logits, "code_nll": nll, "metrics": self.term_metrics({"code_nll": jnp.mean(nll)})}

  def term_metrics(self, means: Mapping[str, Any]) -> dict[str, Any]:
    """{"bits_per_code": code_nll / (L ln 2)} of the per-example mean of code_nll in `means` (a batch's,
    or a split's exact one: the `losses` evaluator); {} without it."""
    if "code_nll" not in means:
      return {}
    return {"bits_per_code": means["code_nll"] / (math.prod(self.input_shape) * math.log(2.0))}

  def eval_nats(self, x: jax.Array, index: jax.Array, labels: jax.Array | None, settings) -> jax.Array:
    """-log p(x) in nats [B] (exact); labels reach a class-conditional prior only."""
    kwargs = {"labels": labels} if self.num_classes else {}
    return self(x, train=False, **kwargs)["code_nll"]

  def draw(self, variables: Any, key: jax.Array, labels: jax.Array | None, options) -> jax.Array:
    """One sequence [1, L], position by position (`draw_recompute`)."""
    return self.draw_recompute(variables, key, labels, options)

  def draw_recompute(self, variables: Any, key: jax.Array, labels: jax.Array | None, options) -> jax.Array:
    """One sequence [1, L] by `sample_autoregressive` (L full forward passes of `logits`), with guidance
    W = options.guidance (`with_guidance`)."""
    # a prior without the option (docs/extending.md's) has no null class
    dropout = getattr(self, "class_dropout", 0.0)
    check_guidance(type(self).__name__, options.guidance, self.num_classes, dropout)
    logits_fn = lambda tokens, y: self.apply(variables, tokens, y, method="logits")  # noqa: E731
    seq_len = int(self.input_shape[0])
    return sample_autoregressive(
      with_guidance(logits_fn, options.guidance, self.num_classes, options.guidance_schedule, seq_len),
      key,
      1,
      seq_len=seq_len,
      temperature=options.temperature,
      top_k=options.top_k,
      top_p=options.top_p,
      labels=labels,
    )


@interface.register("ar_prior", ("code_prior", "conditional"))
class ARPrior(Autoregressive, _TransformerPrior):
  """Causal transformer prior over code sequences (`ae_jax.generation.ARTransformer`): x [B, L] int32 ->
  {"logits" [B, L, K], "code_nll" [B] nats, "metrics": {"bits_per_code"}}."""

  def setup(self) -> None:
    self.transformer = ARTransformer(**self._options(), name="transformer")

  def init_cache(self, batch: int) -> None:
    """Creates the zero key/value cache of `batch` sequences (`ARTransformer.init_cache`)."""
    self.transformer.init_cache(batch)

  def decode_step(self, ids: jax.Array, position: jax.Array) -> jax.Array:
    """ids [B] at `position` -> logits [B, K] through the cache (`ARTransformer.decode_step`)."""
    return self.transformer.decode_step(ids, position)

  def start_ids(self, labels: jax.Array | None, batch: int) -> jax.Array:
    """The ids fed at position 0: int32 [batch] (`ARTransformer.start_ids`)."""
    return self.transformer.start_ids(labels, batch)

  def draw(self, variables: Any, key: jax.Array, labels: jax.Array | None, options) -> jax.Array:
    """One sequence [1, L] through the key/value cache (`sample_cached`: the same tokens as
    `draw_recompute`); with guidance W != 1 the conditional and null-class passes share one cache of batch
    2."""
    check_guidance(type(self).__name__, options.guidance, self.num_classes, self.class_dropout)
    if options.guidance != 1.0:
      labels = jnp.concatenate([labels, jnp.full_like(labels, self.num_classes)])
    batch = 1 if labels is None else labels.shape[0]
    cache = zero_cache(lambda: self.apply(variables, batch, method="init_cache", mutable=["cache"]))

    def step(cache: Any, ids: jax.Array, t: jax.Array) -> tuple[jax.Array, Any]:
      logits, mutated = self.apply(
        {**variables, "cache": cache}, ids, t, method="decode_step", mutable=["cache"]
      )
      return logits, mutated["cache"]

    return sample_cached(
      step,
      cache,
      key,
      self.apply(variables, labels, batch, method="start_ids"),
      seq_len=int(self.input_shape[0]),
      temperature=options.temperature,
      top_k=options.top_k,
      top_p=options.top_p,
      guidance=options.guidance,
      guidance_schedule=options.guidance_schedule,
    )


@interface.register("maskgit_prior", ("code_prior", "conditional"))
class MaskGITPrior(_TransformerPrior):
  """Masked-token transformer prior (`ae_jax.generation.MaskGITTransformer`): x [B, L] int32 -> {"logits",
  "token_mask", "masked_input", "masked_code_xent" [B] nats, "metrics": {"masked_bits_per_code"}}.
  mask_schedule: "cosine", "linear" or "square" (training masks and the decoder's schedule)."""

  mask_schedule: str = "cosine"

  objective = "masked_code_xent"
  score = "masked_xent"
  # the guidance schedule follows positions in sampling order; MaskGIT decodes them in parallel
  sampling_options = (*AUTOREGRESSIVE_OPTIONS[:-1], "steps", "choice_temperature")

  def eval_nats(self, x: jax.Array, index: jax.Array, labels: jax.Array | None, settings) -> jax.Array:
    """The cross-entropy [B] in nats per masked code at the fixed mask of `settings.mask_ratio` and
    `settings.mask_seed` (`fixed_mask`: the same positions for an example in every evaluation)."""
    mask = fixed_mask(index, x.shape[-1], float(settings["mask_ratio"]), int(settings["mask_seed"]))
    return self(x, train=False, labels=labels, token_mask=mask)["masked_code_xent"]

  def draw(self, variables: Any, key: jax.Array, labels: jax.Array | None, options) -> jax.Array:
    """One sequence [1, L] by iterative parallel decoding (`maskgit_decode`, `options.steps` iterations),
    with guidance W = options.guidance (`with_guidance`)."""
    check_guidance(type(self).__name__, options.guidance, self.num_classes, self.class_dropout)
    logits_fn = lambda tokens, y: self.apply(variables, tokens, y, method="logits")  # noqa: E731
    return maskgit_decode(
      with_guidance(logits_fn, options.guidance, self.num_classes),
      key,
      1,
      seq_len=int(self.input_shape[0]),
      vocab_size=self.vocab_size,
      steps=options.steps,
      temperature=options.temperature,
      choice_temperature=options.choice_temperature,
      labels=labels,
      top_k=options.top_k,
      top_p=options.top_p,
      schedule=self.mask_schedule,
    )

  def setup(self) -> None:
    if self.mask_schedule not in MASK_SCHEDULES:
      raise ConfigError(
        f"config.model.mask_schedule must be one of {list(MASK_SCHEDULES)}, got '{self.mask_schedule}'"
      )
    self.transformer = MaskGITTransformer(**self._options(), name="transformer")

  @property
  def mask_id(self) -> int:
    """The mask token's id: K (`vocab_size`)."""
    return self.vocab_size

  def __call__(
    self,
    x: jax.Array,
    *,
    train: bool = False,
    labels: jax.Array | None = None,
    token_mask: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    tokens = x.astype(jnp.int32)
    if token_mask is None:
      masked, token_mask = random_mask(
        self.make_rng("sample"), tokens, mask_id=self.vocab_size, kind=self.mask_schedule
      )
    else:
      token_mask = token_mask.astype(bool)
      masked = jnp.where(token_mask, self.vocab_size, tokens)
    logits = self.logits(masked, labels, train)
    xent = masked_token_loss(logits, tokens, token_mask)
    return {
      "logits": logits,
      "token_mask": token_mask,
      "masked_input": masked,
      "masked_code_xent": xent,
      "metrics": self.term_metrics({"masked_code_xent": jnp.mean(xent)}),
    }

  def term_metrics(self, means: Mapping[str, Any]) -> dict[str, Any]:
    """{"masked_bits_per_code": masked_code_xent / ln 2} of the per-example mean of masked_code_xent in
    `means` (`Autoregressive.term_metrics`); {} without it."""
    if "masked_code_xent" not in means:
      return {}
    return {"masked_bits_per_code": means["masked_code_xent"] / math.log(2.0)}


@losses.register("code_nll")
def _code_nll_term(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """-log p(x) of the autoregressive prior, nats per example (sum over the L codes)."""
  return losses.require_output(outputs, "code_nll", "code_nll")


@losses.register("masked_code_xent")
def _masked_code_xent_term(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """MaskGIT's cross-entropy on the masked positions, nats per masked code (mean per example)."""
  return losses.require_output(outputs, "masked_code_xent", "masked_code_xent")
