r"""Convolutional VAE on dynamically binarised Fashion-MNIST: conv_ae's layers around a 16-dim Gaussian.

Run (the argument picks the objective; without one it is the ELBO):
    python -m experiments.main --config experiments/configs/vae_conv_fashion_mnist.py --workdir runs/vae_conv
    python -m experiments.main --config experiments/configs/vae_conv_fashion_mnist.py:objective=tcvae \
        --workdir runs/vae_conv_tcvae

with objective=elbo (default), beta, tcvae, infovae or wae, the same objectives and weights as
vae_mlp_fashion_mnist.py (its docstring lists them): ELBO, β-VAE (β = 4), β-TCVAE (1, 6, 1), InfoVAE
(α = 0, λ = 1000) and WAE-MMD (λ = 10, deterministic encoder).

Result (README "Results"): see the table there for the ELBO and importance-sampled NLL at 4,690 steps.
"""

from ae_jax import evaluators
from ae_jax.config import default_config
from ae_jax.models import model_config
from experiments.configs.vae_mlp_fashion_mnist import OBJECTIVES, parse_objective, set_objective

ARGS = tuple(f"objective={name}" for name in OBJECTIVES)  # the arguments the config sweep test checks


def get_config(arg: str = "objective=elbo"):
  objective = parse_objective(arg, "vae_conv_fashion_mnist.py")
  config = default_config()
  config.model = model_config("vae_conv", latent_dim=16, likelihood="bernoulli")
  config.loss.bernoulli_nll = 1.0
  config.loss.kl = 1.0
  config.loss.mse = 0.0  # reported (reconstruction error of the Bernoulli mean), not optimised
  config.data.name = "fashion_mnist"
  config.data.scale = "unit"
  config.data.binarize = "dynamic"
  config.batch_size = 128
  config.total_steps = 4690  # 10 epochs
  config.optimizer.learning_rate = 1e-3
  config.log_every = 100
  config.evals.test.every = 1000
  config.checkpoint_every = 1000
  config.evals.samples = evaluators.section("samples")
  config.evals.latents = evaluators.section("latents", split="test")
  # the full estimate for a run of this schedule; a shorter one gets the quick estimate (see the evaluator)
  config.evals.likelihood = evaluators.section(
    "likelihood", split="test", num_samples=1000, full_from_step=config.total_steps
  )
  config.evals.activity = evaluators.section("latent_activity", split="test")  # active latent dims
  set_objective(config, objective, num_pixels=28 * 28)
  return config
