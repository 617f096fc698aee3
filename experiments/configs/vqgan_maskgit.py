r"""MaskGIT's VQGAN tokenizer (Chang et al. 2022) at 256x256, approximated with taming's modules.

    python -m experiments.main --config experiments/configs/vqgan_maskgit.py \
        --config.data.data_dir=/data/tfds --workdir runs/vqgan_maskgit

For an accelerator. MaskGIT's tokenizer (google-research/maskgit, maskgit/nets/vqgan_tokenizer.py with
configs/vqgan_config.py) is a VQGAN without attention ("the non-local layers are removed for faster
speed"): filters 128, channel_multipliers (1, 1, 2, 2, 4) (256 -> 16x16 codes), 2 residual blocks per
level, GroupNorm and swish, 1,024 codes of dimension 256, commitment cost 0.25, and an entropy penalty of
weight 0.1 (softmax over -distances at temperature 0.01). Its architecture is not taming's, and ae-jax has
no model for it; this config is the taming VQGAN with its attention removed (attn_resolutions=(),
mid_attention=False) and those settings. What still differs from MaskGIT's network:

* MaskGIT's residual blocks have no convolution biases, the decoder has 2 blocks per level (taming 3), the
  middle is num_res_blocks plain blocks, downsampling is a 2x2 average pool (taming: a stride-2 conv);
* its 1x1 shortcut convolution is applied to the block's output, not its input (a quirk of its code);
* no quant_conv / post_quant_conv: the encoder's last 1x1 conv gives the 256-dim codes directly.

Parameters: 64,780,163 here against MaskGIT's 54,515,587 (codebook included in both; tests/test_taming.py
counts MaskGIT's from its code). The quantizer: ae-jax's trained VQ (beta 0.25: codebook term weight 1,
commitment 0.25 as MaskGIT's e_latent/q_latent losses) with the `code_entropy` penalty (per-sample entropy
minus the batch's codebook entropy, MaskGIT's "softmax" entropy loss). MaskGIT's repository releases the
tokenizer's architecture and these loss weights, not its training recipe: the reconstruction term (L1
averaged over pixels), optimizer (Adam, betas 0.5 and 0.9, 4.5e-6 per image of the batch 16) and data
(tfds `imagenet2012` prepared in --config.data.data_dir, pixels in [-1, 1], random crops resized to 256)
are vqgan_imagenet_f16_1024.py's.
"""

import ml_collections

from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from ae_jax.quantizers import quantizer_config
from experiments.configs import vqgan_imagenet_f16_1024

ARCHITECTURE = dict(
  ch=128,
  ch_mult=(1, 1, 2, 2, 4),
  num_res_blocks=2,
  attn_resolutions=(),
  mid_attention=False,
  resolution=256,
  z_channels=256,
  dropout=0.0,
)
QUANTIZER = dict(
  num_codes=1024, code_dim=256, beta=0.25, ema=False, codebook_init="uniform", entropy_temperature=0.01
)


def get_config(arg: str | None = None):
  del arg  # no variants
  config = vqgan_imagenet_f16_1024.get_config()  # data, optimizer, schedule and evaluators
  config.model = model_config("vqgan", **ARCHITECTURE, quantizer=quantizer_config("vq", **QUANTIZER))
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = 1.0  # |x - recon| averaged over pixels
  config.loss.mse = 0.0  # reported
  config.loss.codebook = 1.0  # q_latent_loss
  config.loss.commitment = 1.0  # e_latent_loss, already scaled by beta 0.25
  config.loss.code_entropy = 0.1  # entropy_loss_ratio
  # Perceptual and adversarial weights in the style of MAGVIT's JAX tokenizer trainer (MaskGIT's own recipe
  # is unreleased): perceptual 0.1, a non-saturating generator loss 0.1 without an adaptive weight, and R1
  # with penalty cost 10 on ||grad||^2 (disc_r1 is ||grad||^2 / 2, so weight 20); a PatchGAN stands in for
  # their StyleGAN discriminator.
  config.loss.lpips = 0.1
  config.loss.gan_nonsaturating = 0.1
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=3)
  config.adversarial.loss = ml_collections.ConfigDict({"disc_vanilla": 1.0, "disc_r1": 20.0})
  config.adversarial.adaptive_weight = False
  return config
