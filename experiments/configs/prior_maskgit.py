r"""A MaskGIT prior (stage two; Chang et al. 2022) over a trained VQ-VAE's codes: a bidirectional
transformer trained to fill in masked codes, sampled by iterative parallel decoding.

    python -m experiments.main --config experiments/configs/prior_maskgit.py:runs/vqvae_fmnist \
        --workdir runs/prior_maskgit
    python -m experiments.sample --workdir runs/prior_maskgit --num 64 --steps 8

The argument is prior_ar.py's: the stage one's workdir[,step=N][,best][,conditional]; the same model size
and schedule. Its `prior_likelihood` metric is the masked-token cross-entropy at mask ratio 0.5 (in bits
per masked code), not a likelihood: it is not comparable with the AR prior's bits per code.
"""

from experiments.configs.prior_ar import TRANSFORMER, prior_config

ARGS = ()  # needs a trained stage one (see prior_ar.py)


def get_config(arg: str = ""):
  config = prior_config("maskgit_prior", arg, **TRANSFORMER)
  config.model.mask_schedule = "cosine"
  return config
