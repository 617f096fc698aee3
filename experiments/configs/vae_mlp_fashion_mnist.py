r"""VAE (Kingma and Welling) on dynamically binarised Fashion-MNIST: 784-500-20-500-784, Bernoulli likelihood.

Run:
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py --workdir runs/vae_mlp

Objective: negative ELBO = bernoulli_nll + kl (closed form); `--config.loss.kl=4.0` gives a beta-VAE and
`--config.loss_schedules.kl=5000` a linear KL warm-up over 5,000 steps. After training, the test set's
log-likelihood is estimated with 1,000 importance samples per example (nats and bits/dim).

Result (README "Results"): see the table there for the ELBO and importance-sampled NLL at 4,690 steps.
"""

from ae_jax import evaluators
from ae_jax.config import default_config
from ae_jax.models import model_config


def get_config():
  config = default_config()
  config.model = model_config("vae_mlp", hidden=(500,), latent_dim=20, act="relu", likelihood="bernoulli")
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
  config.evals.likelihood = evaluators.section("likelihood", split="test", num_samples=1000)
  return config
