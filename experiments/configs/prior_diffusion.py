r"""A flow-matching ("diffusion") prior (stage two) over a trained autoencoder's or VAE's continuous codes.

    make demo                                            # runs/demo_conv_ae: conv_ae, 16-dim codes
    python -m experiments.main --config experiments/configs/prior_diffusion.py:runs/demo_conv_ae \
        --workdir runs/prior_diffusion_conv_ae
    python -m experiments.sample --workdir runs/prior_diffusion_conv_ae --num 64 --steps 32

The argument is the stage one's workdir (any model with the "autoencoding" ability, or a VAE), optionally
with `,step=N` (a checkpoint step; default the latest) and `,best` (its config.keep_best state); the
config pins the step and its fingerprint, as `prior_ar.py` does. The `latent_codes` dataset
(`ae_jax.generation.latent_codes`) encodes the stage one's dataset once, caches the codes under
STAGE_ONE_WORKDIR/latent_codes/<fingerprint>/ and standardises them by the training codes' mean and std
(undone at sampling). The model is `diffusion_prior` (`ae_jax.generation.denoisers`): a residual MLP over
a flat code, a transformer over the positions of a spatial code [h, w, c] (kl_autoencoder), trained on
the `flow_mse` term. Defaults: width 256, 4 layers, batch 256, 10,000 steps, AdamW 1e-3 with warm-up and
cosine decay, a weight EMA of decay 0.999 (what evaluation and sampling use).
"""

from ae_jax.core.errors import ConfigError
from ae_jax.generation import latent_codes
from ae_jax.models import model_config
from ae_jax.runner.config import default_config, parse_arg
from experiments.configs import prior_ar

# Needs a trained stage one, so the shipped-config sweep (tests/test_configs.py) leaves it out;
# tests/test_diffusion_prior.py checks it on a tiny stage one.
ARGS = ()


def get_config(arg: str = ""):
  options = parse_arg(arg, workdir="", step=0, best=False)
  if not options["workdir"]:
    raise ConfigError(
      "the config needs the stage one's workdir: --config=...prior_diffusion.py:STAGE_ONE_WORKDIR"
    )
  config = default_config()
  config.data = prior_ar.pinned_stage_one("latent_codes", options)
  latent_codes.stage_one_config(config.data)  # a run without a continuous code is refused here
  config.model = model_config("diffusion_prior", width=256, num_layers=4)
  config.loss = {"flow_mse": 1.0}
  config.batch_size = 256
  config.eval_batch_size = 1000
  config.total_steps = 10_000
  config.optimizer.update({**prior_ar.OPTIMIZER, "warmup_steps": 500})
  config.ema_decay = 0.999
  config.log_every = 500
  config.steps_per_dispatch = 10  # a small model on a CPU: less host time per step
  config.checkpoint_every = 2000
  config.evals.test.every = 5000
  del config.evals["reconstructions"]  # codes are not images: experiments.sample decodes them
  return config
