r"""A gated PixelCNN prior (stage two; the VQ-VAE paper's, van den Oord et al. 2016) over a trained VQ-VAE's
code grid.

    python -m experiments.main --config experiments/configs/prior_pixelcnn.py:runs/vqvae_fmnist \
        --workdir runs/prior_pixelcnn
    python -m experiments.sample --workdir runs/prior_pixelcnn --num 64 --temperature 1.0

The argument is prior_ar.py's: the stage one's workdir[,step=N][,best][,conditional]; the same schedule
(3,000 steps of batch 64, AdamW 1e-3 with warm-up and cosine decay). The model: 10 gated layers of 64
features per stack, 5x5 kernels, a 256-unit head; its grid (h, w) is the stage one's. `prior_likelihood`
reports the exact test bits per code, comparable with the AR transformer's. A residual VQ stage one (several
codes per position) is refused: use prior_ar.py.
"""

from experiments.configs.prior_ar import prior_config

ARGS = ()  # needs a trained stage one (see prior_ar.py)
PIXELCNN = dict(features=64, num_layers=10, kernel_size=5, head_features=256)


def get_config(arg: str = ""):
  return prior_config("pixelcnn_prior", arg, **PIXELCNN)
