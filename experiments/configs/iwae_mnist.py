r"""The IWAE paper's one-stochastic-layer setting (Burda et al. 2015, Table 1) on dynamically binarised MNIST.

784-200-200-50 with tanh, Bernoulli likelihood, batch 20, Adam (eps 1e-4), learning rate 1e-3 * 10^(-i/7)
for 3^i epochs, i = 0..7 (3,280 epochs), test NLL estimated with 5,000 importance samples. Paper: VAE (k=1)
86.76 nats, IWAE (k=50) 84.78 nats.

    python -m experiments.main --config experiments/configs/iwae_mnist.py:k=50 --workdir runs/iwae_k50
    python -m experiments.main --config experiments/configs/iwae_mnist.py:k=1 --workdir runs/vae_k1

k=1 trains the standard ELBO (bernoulli_nll + closed-form kl); k>1 the IWAE bound with k samples. Needs tfds
`mnist` (prepared, or --config.data.download=True with TensorFlow installed). The full schedule is 9.84M
steps: run it on an accelerator. `--config.data.name=fashion_mnist --config.total_steps=...` runs the same
model on Fashion-MNIST offline (README "Results"); with fewer steps than the schedule, the likelihood is a
quick estimate unless --config.evals.likelihood.full_from_step=0.
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.runner.config import default_config, parse_arg

STEPS_PER_EPOCH = 60_000 // 20
ARGS = ("k=1", "k=50")  # the arguments the config sweep test checks


def get_config(arg: str = "k=50"):
  k = parse_arg(arg, k=50).k
  if k < 1:
    raise ConfigError(f"iwae_mnist.py:{arg}: k is the number of importance samples, at least 1")
  config = default_config()
  config.model = model_config(
    "vae_mlp", hidden=(200, 200), act="tanh", latent_dim=50, likelihood="bernoulli", num_samples=k
  )
  config.loss.mse = 0.0  # reported, not optimised
  if k == 1:
    config.loss.bernoulli_nll = 1.0
    config.loss.kl = 1.0
  else:
    config.loss.iwae = 1.0
  config.data = data_config("mnist", scale="unit", binarize="dynamic")
  config.batch_size = 20
  config.eval_batch_size = 1000
  epochs = [3**i for i in range(8)]
  config.total_steps = sum(epochs) * STEPS_PER_EPOCH
  config.optimizer.name = "adam"
  config.optimizer.eps = 1e-4
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "piecewise"
  config.optimizer.boundaries = tuple(sum(epochs[: i + 1]) * STEPS_PER_EPOCH for i in range(7))
  config.optimizer.scales = tuple(10 ** (-i / 7) for i in range(8))
  config.log_every = 1000
  config.evals.test.every = 100 * STEPS_PER_EPOCH
  config.checkpoint_every = 10 * STEPS_PER_EPOCH
  config.evals.samples = evaluators.section("samples")
  config.evals.likelihood = evaluators.section(  # a run shorter than the schedule: the quick estimate
    "likelihood", split="test", num_samples=5000, chunk_size=500, full_from_step=config.total_steps
  )
  return config
