"""The quantisers' own loss terms, registered into `ae_jax.losses.LOSSES` when this package is imported.

Each reads a per-example value [B] the quantiser put in the model's outputs (it computes them there
because their codebook entropies are over the whole global batch, which needs the device axis):

  code_entropy  the codebook entropy penalty (`code_entropy_penalty`) of quantisers with code logits or
                distances ("code_logits": vq, rvq, gumbel)
  lfq_entropy   LFQ's entropy penalty (`lfq`)
  gumbel_kl     KL(softmax(logits) || uniform) of the Gumbel quantiser
"""

from __future__ import annotations

import jax

from ae_jax import losses
from ae_jax.losses import Batch, Outputs


def _read(outputs: Outputs, key: str, term: str, needs: str, where: str) -> jax.Array:
  if key not in outputs:
    raise KeyError(
      f"loss term '{term}' needs {needs}, which this model does not output (its outputs: {sorted(outputs)}); "
      f"it is defined for {where}: remove '{term}' from config.loss or choose such a quantizer"
    )
  return outputs[key]


@losses.register("code_entropy")
def _code_entropy_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """Per-sample code entropy minus `diversity` x the global batch's codebook entropy, from code_logits."""
  _read(
    outputs,
    "code_logits",
    "code_entropy",
    "per-position code logits ('code_logits')",
    "vq, rvq, gumbel (lfq has its own 'lfq_entropy'; fsq has no code distances)",
  )
  return _read(outputs, "code_entropy", "code_entropy", "'code_entropy'", "vq, rvq, gumbel")


@losses.register("lfq_entropy")
def _lfq_entropy_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """LFQ's per-sample entropy minus `diversity` x codebook entropy, in nats per example."""
  return _read(outputs, "lfq_entropy", "lfq_entropy", "'lfq_entropy'", "quantizer='lfq'")


@losses.register("gumbel_kl")
def _gumbel_kl_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """KL of the Gumbel quantiser's code distribution to the uniform one, in nats per position."""
  return _read(outputs, "gumbel_kl", "gumbel_kl", "'gumbel_kl'", "quantizer='gumbel'")
