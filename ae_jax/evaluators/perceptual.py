"""The `lpips` evaluator: the mean LPIPS (`ae_jax.metrics.lpips`, the official VGG16 or AlexNet weights) of
the reconstructions of a split to their inputs, the "test LPIPS" tokenizer papers report, in pure JAX over
every device.

    config.evals.lpips = evaluators.section("lpips", split="test", net="vgg", max_examples=10000)

Images: the input and its reconstruction are mapped to [0, 1] by the dataset's `to_unit` and clipped there
(displayable images, as `image_quality` measures them), then to [-1, 1]; gray images are repeated to RGB.
Sizes: with `resize` 0 (the default) images are measured as they are unless their smaller side is below
the network's minimum (16 pixels for vgg, 31 for alex; e.g. Fashion-MNIST's 28 with alex): then both are
resized so that the smaller side is 64 pixels (the size of the patches LPIPS's heads were trained on),
keeping the aspect ratio, with `jax.image.resize`'s bilinear interpolation (half-pixel centres, as PIL and
torch's align_corners=False; upsampling, so no antialiasing). `resize` N > 0: always resized so that the
smaller side is N (the same interpolation, antialiased where it shrinks).

Metrics: `lpips` (the mean over the split's examples, or its first `max_examples`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.evaluators import batches
from ae_jax.metrics import lpips

AUTO_SIZE = 64  # the smaller side images below the network's minimum are resized to (LPIPS's 64x64 patches)


def measured_size(height: int, width: int, net: str, resize: int = 0) -> tuple[int, int]:
  """The (height, width) images of `height` x `width` are measured at by `net` under the `resize` option
  (see the module's docstring); ConfigError for a `resize` below the network's minimum."""
  minimum = lpips.MIN_SIZE[lpips.check_net(net)]
  if resize < 0 or 0 < resize < minimum:
    raise ConfigError(
      f"lpips evaluator: resize={resize} is below the smallest image LPIPS ({net}) measures, {minimum} "
      "pixels; use 0 (as they are, small images to 64) or at least that"
    )
  side = resize or (AUTO_SIZE if min(height, width) < minimum else 0)
  if not side:
    return height, width
  short = min(height, width)
  return round(height * side / short), round(width * side / short)


def prepare(x: jax.Array, to_unit, size: tuple[int, int]) -> jax.Array:
  """Images [B, H, W, C] in model units -> RGB [B, size..., 3] in [-1, 1], clipped (as the evaluator
  measures them)."""
  x = lpips.to_rgb(2.0 * jnp.clip(to_unit(x.astype(jnp.float32)), 0.0, 1.0) - 1.0)
  if tuple(x.shape[1:3]) != tuple(size):
    x = jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method="bilinear")
  return x


def lpips_sums(state, batch, *, model, to_unit, net, size):
  """This device's sum of LPIPS over its valid examples, and their count."""
  recon = batches.model_outputs(model, state, batch)["recon"]
  d = lpips.distance(
    lpips.load_params(net), prepare(batch["x"], to_unit, size), prepare(recon, to_unit, size), net=net
  )
  valid = batch["valid"] > 0
  return {"lpips": jnp.sum(jnp.where(valid, d, 0.0)), "count": jnp.sum(valid.astype(jnp.float32))}


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  info = ctx.dataset.info
  net = lpips.check_net(sec.net)
  size = measured_size(*info.shape[:2], net, int(sec.resize))
  lpips.load_params(net)  # a missing or damaged weights file is reported now, not after training
  sums_fn = functools.partial(lpips_sums, model=ctx.model, to_unit=info.to_unit, net=net, size=size)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    s = batches.section_sums(sums_fn, rstate, ctx, sec)
    return evaluators.Result(
      {"lpips": float(s["lpips"]) / float(s["count"])}, {"net": net, "size": list(size)}
    )

  return evaluate


def _images(spec, data) -> str | None:
  if not spec.bits_per_value or spec.name == "spoken_digit":
    return "its examples are not images with a known pixel range"
  shape = spec.example(data).shape
  if len(shape) != 3 or shape[-1] not in (1, 3):
    return f"LPIPS measures images [H, W, 1 or 3], these are {list(shape)}"
  return None


evaluators.register(
  evaluators.EvaluatorSpec(
    name="lpips",
    build=_build,
    options={"net": "vgg", "resize": 0, "max_examples": ml_collections.config_dict.placeholder(int)},
    needs=_images,
    description="mean LPIPS (VGG16 or AlexNet, the official weights) of the reconstructions of a split",
  )
)
