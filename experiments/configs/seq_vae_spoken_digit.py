r"""Causal-Conv1d sequence VAE on Free Spoken Digit spectrograms (the seed question's model: F=201, Z=256).

Run:
    python -m experiments.main --config experiments/configs/seq_vae_spoken_digit.py --workdir runs/seq_vae
    python -m ae_jax.runner.bottleneck --config experiments/configs/seq_vae_spoken_digit.py

Data: FSDD through tfds (`spoken_digit`) or, offline, the release archive (config.data.archive, else
<data root>/fsdd/); 2,250 training and 250 test recordings (numbers 0-4).
Objective: the negative ELBO, bernoulli_nll + kl, both summed over the real (unpadded) frames in nats; mse
(per element, masked) is reported, not optimised.

Result (README "Results"), 1,000 steps (28 epochs), about 9 minutes on 2 busy CPU cores: test KL 25.8
nats per recording in 1 active latent dim of 256, masked test MSE 0.0112 (predicting the mean training
frame: 0.0229). With --config.loss.kl=0.1 (a beta-VAE): KL 113 nats, 63 active dims, MSE 0.0071.
"""

from ae_jax import evaluators
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.runner.config import default_config


def get_config():
  config = default_config()
  # (train.build binds the device axis, so BatchNorm statistics are synchronised across devices)
  config.model = model_config("seq_vae_conv", latent_dim=256, kernel_size=3, act="tanh", bn_momentum=0.9)
  # The sigmoid output is the mean of a Bernoulli on the [0, 1] spectrogram; summed in nats over the real
  # frames it is on the KL's scale, so weights 1 and 1 give the negative ELBO (an MSE averaged per element
  # would weigh the reconstruction ~3,900 times less: a recording has ~19 real frames x 201 bins).
  config.loss.bernoulli_nll = 1.0
  config.loss.kl = 1.0
  config.loss.mse = 0.0  # reported only
  # 20 ms frames, 32 kept (96% of the recordings fit, longer ones are cropped); n_fft 400: 201 bins. The
  # archive is --config.data.archive, else <data root>/fsdd/ (the data root: $AE_JAX_DATA or ../shared/data).
  config.data = data_config("spoken_digit", num_frames=32, n_fft=400, hop=160)
  config.batch_size = 64
  config.eval_batch_size = 256  # the whole test set (250) in one padded batch
  config.total_steps = 1000
  config.optimizer.learning_rate = 1e-3
  config.log_every = 100
  config.evals.test.every = 250
  config.evals.latents = evaluators.section("latents", split="test")
  config.checkpoint_every = 250
  return config
