r"""VAE (Kingma and Welling) on dynamically binarised Fashion-MNIST: 784-500-20-500-784, Bernoulli likelihood.

Run (the argument picks the objective; without one it is the ELBO):
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py --workdir runs/vae_mlp
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py:objective=beta \
        --workdir runs/vae_mlp_beta
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py:objective=tcvae \
        --workdir runs/vae_mlp_tcvae
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py:objective=infovae \
        --workdir runs/vae_mlp_infovae
    python -m experiments.main --config experiments/configs/vae_mlp_fashion_mnist.py:objective=wae \
        --workdir runs/vae_mlp_wae

Objectives (config.loss; terms at weight 0 are reported, not optimised; see ae_jax.losses.batch_terms):
  elbo     negative ELBO = bernoulli_nll + kl (closed form); `--config.loss_schedules.kl=5000` adds a
           linear KL warm-up over 5,000 steps.
  beta     β-VAE: bernoulli_nll + 4 kl.
  tcvae    β-TCVAE (Chen et al. 2018): bernoulli_nll + tc_mi + 6 tc + tc_dwkl, minibatch stratified
           sampling with N = the training split's length (`tc_mws` etc. for weighted sampling); kl reported.
  infovae  InfoVAE / MMD-VAE (Zhao et al. 2019) with α = 0, λ = 1000: bernoulli_nll + (1 - α) kl
           + (α + λ - 1) mmd_rbf = bernoulli_nll + kl + 999 mmd_rbf.
  wae      WAE-MMD (Tolstikhin et al. 2018) with the paper's MNIST λ = 10: the squared Euclidean cost
           |x - x'|^2 (784 mse) + 10 mmd_imq_multiscale, a deterministic encoder (z = the posterior mean)
           and no KL; bernoulli_nll reported. Without q(z|x) there is no importance-sampled likelihood.
After training, the other objectives' test log-likelihood is estimated with 1,000 importance samples per
example (nats and bits/dim); a run shorter than the 4,690 steps gets a quick estimate (1,000 examples, 100
samples each) unless --config.evals.likelihood.full_from_step=0. The batch-level terms (tc*, mmd*) are
evaluated per evaluation batch of config.eval_batch_size examples and averaged.

Result (README "Results"): see the table there for the ELBO and importance-sampled NLL at 4,690 steps.
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.models import model_config
from ae_jax.runner.config import default_config, parse_arg

OBJECTIVES = ("elbo", "beta", "tcvae", "infovae", "wae")
ARGS = tuple(f"objective={name}" for name in OBJECTIVES)  # the arguments the config sweep test checks


def parse_objective(arg: str | None, config_file: str) -> str:
  """The objective of a config argument `objective=NAME` (or just NAME; none: elbo)."""
  name = parse_arg(arg, objective="elbo").objective
  if name not in OBJECTIVES:
    raise ConfigError(f"{config_file}:{arg}: use objective=NAME with NAME in {OBJECTIVES}")
  return name


def set_objective(config, objective: str, num_pixels: int) -> None:
  """Turns the ELBO config (bernoulli_nll + kl, mse reported) into `objective`'s; elbo changes nothing."""
  if objective == "beta":
    config.loss.kl = 4.0
  elif objective == "tcvae":
    config.loss.kl = 0.0
    config.loss.update({"tc_mi": 1.0, "tc": 6.0, "tc_dwkl": 1.0})
  elif objective == "infovae":
    alpha, lam = 0.0, 1000.0
    config.loss.kl = 1.0 - alpha
    config.loss.mmd_rbf = alpha + lam - 1.0
  elif objective == "wae":
    del config.loss["kl"]
    config.loss.bernoulli_nll = 0.0
    config.loss.mse = float(num_pixels)
    config.loss.mmd_imq_multiscale = 10.0
    config.model.deterministic_encoder = True
    del config.evals["likelihood"]


def get_config(arg: str = "objective=elbo"):
  model = model_config("vae_mlp", hidden=(500,), latent_dim=20, act="relu", likelihood="bernoulli")
  return fashion_mnist_vae(model, arg, "vae_mlp_fashion_mnist.py")


def fashion_mnist_vae(model, arg: str | None, config_file: str):
  """The Fashion-MNIST VAE experiment around `model` (a model section; vae_conv_fashion_mnist.py shares
  it): dynamically binarised data, a Bernoulli likelihood, 10 epochs, the objective picked by `arg`."""
  objective = parse_objective(arg, config_file)
  config = default_config()
  config.model = model
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
