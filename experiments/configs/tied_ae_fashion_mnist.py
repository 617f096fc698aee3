r"""Tied-weight autoencoder on Fashion-MNIST: 784-196-81-49, sigmoid, the decoder uses the kernels transposed.

From a TensorFlow forum question ("decoder weights are the transpose of the encoder"): sigmoid after every
encoder layer (the 49-unit code included) and every decoder layer but the last, which is linear; pixels in
[0, 1]; MSE; Adam 1e-3; batch 128; 10 epochs. 174,896 parameters (the decoder has only biases).

Run:
    python -m experiments.main --config experiments/configs/tied_ae_fashion_mnist.py --workdir runs/tied_ae

Result (2 CPU cores, 43 s): test MSE 0.026837 per pixel in [0, 1] over the 10,000 test images (0.0457 at
step 1000, still falling at the end); predicting the training mean image scores 0.086641.

To train only some parameters, name them with regexes over '/'-joined paths (a tuple field: quote it, or
repeat the flag), e.g. only the encoder (the kernels are encoder parameters, so this freezes just the
decoder's biases, at zero): --config.freeze='("decoder/.*",)' reaches test MSE 0.026722.
"""

from ae_jax import evaluators
from ae_jax.models import model_config
from ae_jax.runner.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("tied_ae", dims=(196, 81, 49), act="sigmoid", output_act="identity")
  config.loss.mse = 1.0
  config.data.name = "fashion_mnist"
  config.data.scale = "unit"
  config.batch_size = 128
  config.total_steps = 4690  # 10 epochs of 469 steps
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.log_every = 100
  config.evals.test.every = 1000
  config.evals.latents = evaluators.section("latents", split="test")
  config.checkpoint_every = 1000
  return config
