"""Generation: a finished run loaded as a frozen stage one (stage_one.py), priors over its codes, and the
samplers that draw from a run (samplers.py): the second stage after a VQ-VAE or autoencoder.

* `ARTransformer` (transformer.py): a GPT-style causal transformer over raster-scan token sequences, its
  per-example `token_nll` and `sample_autoregressive` (temperature, top-k, nucleus sampling).
* `MaskGITTransformer` (maskgit.py): a bidirectional masked-token transformer (Chang et al. 2022), its
  training masks (`random_mask`, `masked_token_loss`) and iterative parallel decoding (`maskgit_decode`).
* `fit_gaussian_mixture` (mixture.py): ex-post density estimation of continuous latents (Ghosh et al. 2020).
* `diffusion_prior` (denoisers.py): a flow-matching prior over an autoencoder's or VAE's standardised codes
  (the `latent_codes` dataset, latent_codes.py), its noising path and ODE sampler (diffusion.py), drawn
  through its frozen stage one by diffusion_sampler.py.

Both transformers share one trunk (trunk.py) and one set of logit filters (sampling.py).
"""

from ae_jax.generation.maskgit import (
  MASK_SCHEDULES,
  MaskGITTransformer,
  decode_mask_counts,
  mask_schedule,
  masked_token_loss,
  maskgit_decode,
  random_mask,
)
from ae_jax.generation.mixture import COVARIANCES, GaussianMixture, fit_gaussian_mixture
from ae_jax.generation.sampling import filter_top_k, filter_top_p, sample_logits
from ae_jax.generation.transformer import ARTransformer, sample_autoregressive, token_nll
from ae_jax.generation.trunk import SequenceTransformer, Transformer, TransformerBlock

__all__ = [
  "ARTransformer",
  "COVARIANCES",
  "GaussianMixture",
  "MASK_SCHEDULES",
  "MaskGITTransformer",
  "SequenceTransformer",
  "Transformer",
  "TransformerBlock",
  "decode_mask_counts",
  "filter_top_k",
  "filter_top_p",
  "fit_gaussian_mixture",
  "mask_schedule",
  "maskgit_decode",
  "masked_token_loss",
  "random_mask",
  "sample_autoregressive",
  "sample_logits",
  "token_nll",
]
