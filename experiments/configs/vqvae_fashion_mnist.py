r"""VQ-VAE on Fashion-MNIST: vqvae_cifar10.py's model at half width (h=64, K=256 codes of D=32), batch 64;
28x28x1 images give 7x7 codes.

    python -m experiments.main --config experiments/configs/vqvae_fashion_mnist.py --workdir runs/vqvae_fmnist

Pixels in [-0.5, 0.5]; the objective is NMSE (mse / the training variance, 0.124626 over the 60,000
training images) + commitment, as on CIFAR-10.

The quantizer is the section config.model.quantizer, which holds the options of its quantizer only
(`python -m ae_jax.core.registry` lists each quantizer's): flags change them, e.g.
`--config.model.quantizer.gradient=rotation` or `--config.model.quantizer.cosine=True
--config.model.quantizer.codebook_dim=8`. Another quantizer (rvq, fsq, lfq, gumbel) has other options:
switch with vqvae_cifar10.py's `:quantizer=NAME` argument, which also adds the loss terms it needs
(lfq_entropy, gumbel_kl), or in a config file with `quantizer_config(NAME, ...)`.
Loss terms and evaluators are added with flags, e.g. `--config.loss.code_entropy=0.1` or
`--config.evals.quality=image_quality` (`ae_jax.runner.config.complete_config`).
"""

from ae_jax import evaluators
from ae_jax.models import model_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.config import default_config


def get_config():
  config = default_config()
  config.model = model_config(
    "vqvae",
    hidden=64,
    res_hidden=32,
    num_res_layers=2,
    quantizer=quantizer_config(
      "vq",
      num_codes=256,
      code_dim=32,
      beta=0.25,
      ema=True,
      decay=0.99,
      codebook_init="kmeans++",
      dead_code_threshold=1.0,
    ),
  )
  config.loss.mse = 0.0  # reported
  config.loss.nmse = 1.0
  config.loss.codebook = 1.0
  config.loss.commitment = 1.0
  config.data.name = "fashion_mnist"
  config.data.scale = "centered"
  config.batch_size = 64
  config.eval_batch_size = 1000
  config.total_steps = 2000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-4
  config.log_every = 100
  config.evals.test.every = 1000
  config.evals.codebook = evaluators.section("codebook", split="test")
  config.checkpoint_every = 1000
  return config
