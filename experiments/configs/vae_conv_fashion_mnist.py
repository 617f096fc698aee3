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

from ae_jax.models import model_config
from experiments.configs.vae_mlp_fashion_mnist import OBJECTIVES, fashion_mnist_vae

ARGS = tuple(f"objective={name}" for name in OBJECTIVES)  # the arguments the config sweep test checks


def get_config(arg: str = "objective=elbo"):
  model = model_config("vae_conv", latent_dim=16, likelihood="bernoulli")
  return fashion_mnist_vae(model, arg, "vae_conv_fashion_mnist.py")
