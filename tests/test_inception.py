"""The FID Inception network (ae_jax.metrics.inception) and its weights (ae_jax.metrics.inception_weights)
against independent references, with random weights (pytorch-fid's real weights cannot be downloaded here).

- Layout: pytorch-fid's state dict, written here from torchvision's `Inception3` constructor arguments
  (`num_classes=1008`, no aux head), has the names and shapes ae-jax's converter expects.
- Network: the same random state dict, given to ae-jax's converter and to `fidax` (0.3.1, a Flax port of
  pytorch-fid's network by another author, loaded through its own pretrained-weights path: a pickle of
  jax-fid's nested dict), gives the same 2,048-d pool features on real CIFAR-10 and Fashion-MNIST images;
  the 1,008-way logits are checked as one dense layer against the fc weights. One BasicConv2d and the pools
  are also checked against torch's own conv2d / batch_norm / avg_pool2d / max_pool2d.
- Resize: pytorch-fid's `F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)` with torch.
- Reading: files written by `torch.save` (zip and legacy formats) are read without torch, identically; a
  pickle naming any other class is refused; a file whose sha256 is not the weights' is refused.
- FID's formula: ae-jax's `frechet_distance` against pytorch-fid's (scipy.linalg.sqrtm) in float64.

Nothing here needs the real weights; a test that does would skip without them.
"""

from __future__ import annotations

import collections
import gzip
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import cifar_test_images
from PIL import Image

from ae_jax.core.errors import ConfigError
from ae_jax.metrics import inception, inception_weights
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance

# ----------------------------------------------------------------------------- pytorch-fid's state dict

# torchvision's Inception3 blocks: (branch, in channels (None: the block's input), out channels, kernel)
_BLOCKS = {
  "A": lambda c, pool: [
    ("branch1x1", c, 64, (1, 1)),
    ("branch5x5_1", c, 48, (1, 1)),
    ("branch5x5_2", 48, 64, (5, 5)),
    ("branch3x3dbl_1", c, 64, (1, 1)),
    ("branch3x3dbl_2", 64, 96, (3, 3)),
    ("branch3x3dbl_3", 96, 96, (3, 3)),
    ("branch_pool", c, pool, (1, 1)),
  ],
  "B": lambda c: [
    ("branch3x3", c, 384, (3, 3)),
    ("branch3x3dbl_1", c, 64, (1, 1)),
    ("branch3x3dbl_2", 64, 96, (3, 3)),
    ("branch3x3dbl_3", 96, 96, (3, 3)),
  ],
  "C": lambda c, c7: [
    ("branch1x1", c, 192, (1, 1)),
    ("branch7x7_1", c, c7, (1, 1)),
    ("branch7x7_2", c7, c7, (1, 7)),
    ("branch7x7_3", c7, 192, (7, 1)),
    ("branch7x7dbl_1", c, c7, (1, 1)),
    ("branch7x7dbl_2", c7, c7, (7, 1)),
    ("branch7x7dbl_3", c7, c7, (1, 7)),
    ("branch7x7dbl_4", c7, c7, (7, 1)),
    ("branch7x7dbl_5", c7, 192, (1, 7)),
    ("branch_pool", c, 192, (1, 1)),
  ],
  "D": lambda c: [
    ("branch3x3_1", c, 192, (1, 1)),
    ("branch3x3_2", 192, 320, (3, 3)),
    ("branch7x7x3_1", c, 192, (1, 1)),
    ("branch7x7x3_2", 192, 192, (1, 7)),
    ("branch7x7x3_3", 192, 192, (7, 1)),
    ("branch7x7x3_4", 192, 192, (3, 3)),
  ],
  "E": lambda c: [
    ("branch1x1", c, 320, (1, 1)),
    ("branch3x3_1", c, 384, (1, 1)),
    ("branch3x3_2a", 384, 384, (1, 3)),
    ("branch3x3_2b", 384, 384, (3, 1)),
    ("branch3x3dbl_1", c, 448, (1, 1)),
    ("branch3x3dbl_2", 448, 384, (3, 3)),
    ("branch3x3dbl_3a", 384, 384, (1, 3)),
    ("branch3x3dbl_3b", 384, 384, (3, 1)),
    ("branch_pool", c, 192, (1, 1)),
  ],
}
_STEM = [
  ("Conv2d_1a_3x3", 3, 32, (3, 3)),
  ("Conv2d_2a_3x3", 32, 32, (3, 3)),
  ("Conv2d_2b_3x3", 32, 64, (3, 3)),
  ("Conv2d_3b_1x1", 64, 80, (1, 1)),
  ("Conv2d_4a_3x3", 80, 192, (3, 3)),
]
_MIXED = [
  ("Mixed_5b", "A", (192, 32)),
  ("Mixed_5c", "A", (256, 64)),
  ("Mixed_5d", "A", (288, 64)),
  ("Mixed_6a", "B", (288,)),
  ("Mixed_6b", "C", (768, 128)),
  ("Mixed_6c", "C", (768, 160)),
  ("Mixed_6d", "C", (768, 160)),
  ("Mixed_6e", "C", (768, 192)),
  ("Mixed_7a", "D", (768,)),
  ("Mixed_7b", "E", (1280,)),
  ("Mixed_7c", "E", (2048,)),
]


def _convs() -> list[tuple[str, int, int, tuple[int, int]]]:
  """Every BasicConv2d of pytorch-fid's network: (torch module name, in, out, kernel)."""
  out = list(_STEM)
  for block, kind, args in _MIXED:
    out += [(f"{block}.{name}", i, o, k) for name, i, o, k in _BLOCKS[kind](*args)]
  return out


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A random state dict in pytorch-fid's names and torch layouts (num_batches_tracked included, as
  torch's BatchNorm2d writes it), scaled so activations stay O(1) through the 94 convolutions: He-normal
  kernels, BatchNorm scale and running variance in [0.5, 1.5], small shifts."""
  rng = np.random.default_rng(seed)
  sd: dict[str, np.ndarray] = {}
  for name, cin, cout, (kh, kw) in _convs():
    fan_in = cin * kh * kw
    sd[f"{name}.conv.weight"] = (rng.standard_normal((cout, cin, kh, kw)) * np.sqrt(2.0 / fan_in)).astype(
      np.float32
    )
    sd[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f"{name}.bn.bias"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    sd[f"{name}.bn.running_mean"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f"{name}.bn.num_batches_tracked"] = np.array(0, np.int64)
  sd["fc.weight"] = (rng.standard_normal((1008, 2048)) / np.sqrt(2048)).astype(np.float32)
  sd["fc.bias"] = (0.1 * rng.standard_normal(1008)).astype(np.float32)
  return sd


def fidax_weights(sd: dict[str, np.ndarray]) -> dict:
  """The state dict as fidax's pretrained `params_dict` (jax-fid's pickle: torch names, Flax layouts)."""
  out: dict = {}
  for name, *_ in _convs():
    node = out
    for key in name.split("."):
      node = node.setdefault(key, {})
    node["conv"] = {"kernel": sd[f"{name}.conv.weight"].transpose(2, 3, 1, 0)}
    node["bn"] = {
      "scale": sd[f"{name}.bn.weight"],
      "bias": sd[f"{name}.bn.bias"],
      "mean": sd[f"{name}.bn.running_mean"],
      "var": sd[f"{name}.bn.running_var"],
    }
  return out


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
  return random_state_dict()


@pytest.fixture(scope="module")
def variables(state_dict):
  return inception_weights.convert(state_dict)


def test_state_dict_layout_is_torchvisions(state_dict):
  """The converter expects exactly pytorch-fid's tensors (94 BasicConv2d x 5 + fc): 472 names and shapes."""
  want = {k: v.shape for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert len(want) == 472
  assert inception_weights.state_dict_shapes() == want
  variables = inception_weights.convert(state_dict)
  assert variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
  assert variables["params"]["fc"]["kernel"].shape == (2048, 1008)
  with pytest.raises(ConfigError, match="1 tensors missing"):
    inception_weights.convert({k: v for k, v in state_dict.items() if k != "fc.bias"})
  wrong = dict(state_dict, **{"fc.weight": state_dict["fc.weight"].T})
  with pytest.raises(ConfigError, match=r"fc.weight has shape \[2048, 1008\], expected \[1008, 2048\]"):
    inception_weights.convert(wrong)


# ----------------------------------------------------------------------------- real images


def _fashion_images(n: int) -> np.ndarray | None:
  """The first `n` Fashion-MNIST test images (Debian's dataset-fashion-mnist), uint8 [n, 28, 28, 1]."""
  path = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
  if not path.is_file():
    return None
  with gzip.open(path) as f:
    raw = f.read(16 + n * 28 * 28)
  return np.frombuffer(raw[16:], np.uint8).reshape(n, 28, 28, 1)


def _photos(n: int, size: int) -> np.ndarray:
  """Photographs scikit-image ships (a test dependency), RGB uint8 [n, size, size, 3]."""
  import skimage

  folder = Path(skimage.__file__).parent / "data"
  names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")[:n]
  return np.stack(
    [np.asarray(Image.open(folder / f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in names]
  )


@pytest.fixture(scope="module")
def rgb_images() -> np.ndarray:
  """Three real RGB images in [0, 1], float32 [3, 32, 32, 3]: CIFAR-10 (else bundled photographs)."""
  images = cifar_test_images(3)
  return (images if images is not None else _photos(3, 32)).astype(np.float32) / 255.0


def _torch_resize(images: np.ndarray, size: tuple[int, int] = (299, 299)) -> np.ndarray:
  """pytorch-fid's resize, by torch itself: [B, H, W, C] -> [B, size..., C] float32."""
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32))
  y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
  return y.numpy().transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- preprocessing


def test_resize_is_torch_bilinear_interpolate(rgb_images):
  """`resize_bilinear` is F.interpolate(bilinear, align_corners=False), up and down (no antialias), and
  `preprocess` is pytorch-fid's input: that resize to 299 then 2x - 1, grayscale repeated to RGB first."""
  rng = np.random.default_rng(0)
  cases = [
    (rgb_images, (299, 299)),  # CIFAR-10's 32 px, the case FID runs
    (rng.uniform(size=(2, 28, 28, 1)).astype(np.float32), (299, 299)),  # Fashion-MNIST's 28 px
    (rng.uniform(size=(2, 20, 37, 3)).astype(np.float32), (299, 299)),  # not square
    (rng.uniform(size=(1, 400, 350, 3)).astype(np.float32), (299, 299)),  # shrinking: no antialiasing
    (rng.uniform(size=(1, 64, 64, 3)).astype(np.float32), (64, 64)),  # the same size: unchanged
  ]
  resize = jax.jit(inception.resize_bilinear, static_argnums=(1, 2))
  worst = 0.0
  for images, size in cases:
    got = np.asarray(resize(images, *size))
    want = _torch_resize(images, size)
    assert got.shape == want.shape
    worst = max(worst, float(np.abs(got - want).max()))
  assert worst <= 1e-6, worst
  gray = cases[1][0]
  got = np.asarray(jax.jit(inception.preprocess)(gray))
  want = 2.0 * _torch_resize(np.repeat(gray, 3, axis=-1)) - 1.0
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  assert "pytorch-fid" in inception.PROTOCOL and "align_corners=False" in inception.PROTOCOL


def test_pools_and_basic_conv_match_torch(variables, state_dict):
  """The blocks' pools are torch's (3x3 average excluding the padding; 3x3 max padded or strided), and a
  BasicConv2d given converted weights is torch's conv2d + batch_norm(eps 0.001) + relu, for a strided 3x3
  and for asymmetric 1x7 / 7x1 kernels (the [O, I, kH, kW] -> [kH, kW, I, O] transposition)."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 17, 17, 8)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  for ours, theirs in (
    (inception._avg_pool_same, lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)),
    (inception._max_pool_same, lambda t: F.max_pool2d(t, 3, 1, 1)),
    (inception._max_pool_down, lambda t: F.max_pool2d(t, 3, 2)),
  ):
    want = theirs(xt).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(jax.jit(ours)(x)), want, rtol=1e-6, atol=1e-6)

  for name, cin, cout, kernel, stride, padding in (
    ("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
    ("Mixed_6b.branch7x7_2", 128, 128, (1, 7), 1, (0, 3)),
    ("Mixed_6b.branch7x7_3", 128, 192, (7, 1), 1, (3, 0)),
  ):
    block, _, branch = name.partition(".")
    tree = {
      c: (variables[c][block][branch] if branch else variables[c][block]) for c in ("params", "batch_stats")
    }
    x = rng.standard_normal((2, 19, 23, cin)).astype(np.float32)
    module = inception.BasicConv2d(cout, kernel, stride, padding)
    got = np.asarray(jax.jit(module.apply)(tree, x))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    t = {k: torch.from_numpy(state_dict[f"{name}.{k}"]) for k in ("conv.weight", "bn.weight", "bn.bias")}
    y = F.conv2d(xt, t["conv.weight"], stride=stride, padding=padding)
    mean, var = (torch.from_numpy(state_dict[f"{name}.bn.running_{k}"]) for k in ("mean", "var"))
    y = F.relu(F.batch_norm(y, mean, var, t["bn.weight"], t["bn.bias"], training=False, eps=0.001))
    want = y.numpy().transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


# ----------------------------------------------------------------------------- the network against fidax


def _fidax_pool(weights: dict, inputs: np.ndarray, folder: Path) -> np.ndarray:
  """fidax's 2,048-d pool features of network inputs [B, 299, 299, 3] in [-1, 1], its weights read by its
  own pretrained path (`InceptionV3(pretrained=True)` unpickles `<ckpt_dir>/inception_v3_weights_fid.pickle`
  when the file exists: nothing is downloaded). fidax's head is left out (it does not run on JAX 0.10)."""
  fidax = pytest.importorskip(
    "fidax.inception", reason="fidax is not installed (pip install --no-deps fidax)"
  )
  with open(folder / "inception_v3_weights_fid.pickle", "wb") as f:
    pickle.dump(weights, f)
  net = fidax.InceptionV3(pretrained=True, include_head=False, ckpt_dir=str(folder))
  fidax_variables = jax.jit(lambda x: net.init(jax.random.PRNGKey(0), x, train=False))(inputs[:1])
  out = jax.jit(lambda v, x: net.apply(v, x, train=False))(fidax_variables, inputs)
  return np.asarray(out).reshape(inputs.shape[0], -1)


def test_pool_features_and_logits_match_fidax(state_dict, variables, rgb_images, tmp_path):
  """Random weights in pytorch-fid's naming through ae-jax's converter and through fidax: the same pool
  features on real images (CIFAR-10, and Fashion-MNIST's grayscale), ae-jax resizing them itself and fidax
  given torch's resize; the logits are pool @ fc.weight.T (+ fc.bias), in float64 here."""
  gray = _fashion_images(1)
  gray = (gray if gray is not None else _photos(1, 28).mean(-1, keepdims=True)).astype(np.float32) / 255.0
  apply = jax.jit(inception.InceptionV3().apply)
  ours = [apply(variables, rgb_images), apply(variables, gray)]
  pool = np.concatenate([np.asarray(o["pool"]) for o in ours])

  resized = [_torch_resize(rgb_images), _torch_resize(np.repeat(gray, 3, axis=-1))]
  inputs = 2.0 * np.concatenate(resized) - 1.0
  theirs = _fidax_pool(fidax_weights(state_dict), inputs, tmp_path)
  assert pool.shape == theirs.shape == (4, 2048)
  scale = float(np.abs(theirs).max())
  assert 1.0 < scale < 1e3 and np.std(theirs) > 0.1  # random weights that neither vanish nor explode
  diff = float(np.abs(pool - theirs).max())
  assert diff <= 1e-4 * scale, (diff, scale)
  np.testing.assert_allclose(pool, theirs, rtol=1e-4, atol=1e-5 * scale)

  w, b = state_dict["fc.weight"].astype(np.float64), state_dict["fc.bias"].astype(np.float64)
  unbiased = pool.astype(np.float64) @ w.T
  for key, want in (("logits_unbiased", unbiased), ("logits", unbiased + b)):
    got = np.concatenate([np.asarray(o[key]) for o in ours])
    assert got.shape == (4, 1008)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


# ----------------------------------------------------------------------------- reading .pth files


def _small_state_dict() -> collections.OrderedDict:
  """What a state dict may hold: a module's own (with its `_metadata`), float16/float64/int64 tensors, a
  0-d counter, a transposed (non-contiguous) view, a view at an offset sharing another tensor's storage,
  and an empty tensor."""
  torch.manual_seed(0)
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, (1, 3), bias=False), torch.nn.BatchNorm2d(4, eps=0.001))
  module[1].running_var.uniform_(0.5, 1.5)
  sd = module.state_dict()
  base = torch.randn(5, 6)
  sd["extra.half"] = torch.randn(3, 2).half()
  sd["extra.double"] = torch.randn(4, dtype=torch.float64)
  sd["extra.long"] = torch.arange(7)
  sd["extra.transposed"] = base.t()
  sd["extra.offset_view"] = base[2:, 1:4]
  sd["extra.base"] = base
  sd["extra.empty"] = torch.zeros(0, 3)
  return sd


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_torch_save_files_without_torch(tmp_path, zip_format):
  sd = _small_state_dict()
  path = tmp_path / "small.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
  got = inception_weights.read_state_dict(path)
  assert list(got) == list(sd)
  for name, tensor in sd.items():
    want = tensor.numpy()
    assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
    np.testing.assert_array_equal(got[name], want, err_msg=name)


class _NotATensor:
  def __reduce__(self):
    return (print, ("unpickled",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_pickles_naming_other_classes(tmp_path, zip_format, capsys):
  path = tmp_path / "evil.pth"
  torch.save({"w": torch.ones(2), "x": _NotATensor()}, path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(
    ConfigError, match=r"as a PyTorch state dict \(refusing (__builtin__|builtins).print: a state dict holds"
  ):
    inception_weights.read_state_dict(path)
  assert "unpickled" not in capsys.readouterr().out
  (tmp_path / "text.pth").write_text("not a state dict")
  with pytest.raises(ConfigError, match="cannot be read as a PyTorch state dict"):
    inception_weights.read_state_dict(tmp_path / "text.pth")


def test_refuses_a_file_that_is_not_the_weights(tmp_path, monkeypatch):
  """A file whose sha256 is not pytorch-fid's is refused before it is read, naming the fix."""
  path = tmp_path / inception_weights.FILE_NAME
  torch.save(_small_state_dict(), path)
  with pytest.raises(ConfigError) as e:
    inception_weights.check_file(path)
  message = str(e.value)
  assert str(path) in message and "delete it and download" in message and inception_weights.URL in message
  assert inception_weights.SHA256[:16] in message
  monkeypatch.setenv(inception_weights.ENV_VAR, str(tmp_path))  # a folder holding it: found, then refused
  with pytest.raises(ConfigError, match="delete it and download"):
    inception_weights.load_variables(allow_download=False)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
  monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  with pytest.raises(ConfigError) as e:
    inception_weights.find_weights(allow_download=False)
  message = str(e.value)
  assert f"${inception_weights.ENV_VAR}" in message
  assert str(tmp_path / "cache" / "ae_jax" / inception_weights.FILE_NAME) in message
  assert inception_weights.URL in message
  monkeypatch.setenv(inception_weights.ENV_VAR, str(tmp_path / "nowhere.pth"))
  with pytest.raises(ConfigError, match=r"\$AE_JAX_INCEPTION .*nowhere.pth is not a file"):
    inception_weights.find_weights(allow_download=False)


def test_real_weights_load_and_classify():
  """With pytorch-fid's weights on this machine: they convert, and the pool features of a photograph are
  finite and its top class is not the background class 0."""
  try:
    path = inception_weights.find_weights(allow_download=False)
  except ConfigError as e:
    pytest.skip(f"pytorch-fid's Inception weights are not here: {e}")
  variables = inception_weights.load_variables(path, allow_download=False)
  out = jax.jit(inception.InceptionV3().apply)(variables, _photos(2, 299).astype(np.float32) / 255.0)
  assert np.all(np.isfinite(np.asarray(out["pool"])))
  assert np.all(np.argmax(np.asarray(out["logits"]), axis=1) > 0)


# ----------------------------------------------------------------------------- FID's formula


def _pytorch_fid_distance(mu1, sigma1, mu2, sigma2) -> float:
  """pytorch-fid's calculate_frechet_distance (fid_score.py), float64: tr sqrt(sigma1 sigma2) by sqrtm."""
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * 1e-6
    covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(np.real(covmean)))


def test_frechet_distance_is_pytorch_fids_formula():
  """ae-jax's one Fréchet distance (sample_metrics.frechet_distance) against pytorch-fid's sqrtm form on
  random statistics in 256 dimensions: correlated features, then two nearby sets (a small FID, where
  cancellation is worst)."""
  rng = np.random.default_rng(0)
  mix = rng.standard_normal((256, 256)) / 16.0
  a = np.maximum(rng.standard_normal((1000, 256)) @ mix, 0.0)  # ReLU features, as Inception's pool
  b = np.maximum(rng.standard_normal((1000, 256)) @ (mix + 0.05 * rng.standard_normal((256, 256))) + 0.1, 0.0)
  near = np.maximum(rng.standard_normal((1000, 256)) @ mix, 0.0)
  for other, rtol in ((b, 1e-10), (near, 1e-10)):
    stats = (*feature_statistics(a), *feature_statistics(other))
    want = _pytorch_fid_distance(*stats)
    got = frechet_distance(*stats)
    assert want > 0.0
    np.testing.assert_allclose(got, want, rtol=rtol)


def test_inception_input_checks():
  with pytest.raises(Exception, match=r"expects images \[B, H, W, 1 or 3\]"):
    inception.preprocess(jnp.zeros((2, 8, 8, 2)))


# ----------------------------------------------------------------------------- the fid and rfid evaluators


def _no_weights_anywhere(monkeypatch, tmp_path) -> Path:
  monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  return tmp_path / "cache" / "ae_jax" / inception_weights.FILE_NAME


@pytest.mark.parametrize("kind", ["rfid", "fid", "inception_score"])
def test_evaluators_without_the_weights_are_refused_when_built(kind, tiny_config, tmp_path, monkeypatch):
  """No weights and no download: building the evaluator (before training) raises one ConfigError naming
  $AE_JAX_INCEPTION and the cache path; the model is never run."""
  from ae_jax import evaluators
  from ae_jax.runner import experiment

  cache = _no_weights_anywhere(monkeypatch, tmp_path)
  tiny_config.evals = {kind: evaluators.section(kind, download=False)}
  evaluators.check(tiny_config)
  exp = experiment.setup(tiny_config)
  section = tiny_config.evals[kind]
  with pytest.raises(ConfigError) as e:
    evaluators.EVALUATORS[kind].build(kind, section, exp.context())
  message = str(e.value)
  assert "\n" not in message and "$AE_JAX_INCEPTION" in message and str(cache) in message


# The network applied directly, compiled once for the evaluator tests' reference features (the same shapes).
_direct_apply = jax.jit(inception.InceptionV3().apply)


def test_rfid_evaluator_is_the_frechet_distance_of_the_pool_features(tiny_config, variables, monkeypatch):
  """With random Inception weights injected: the rfid of a tiny model's 3 test images (2 batches of 2 over
  2 devices, the last padded) is frechet_distance of the features of the clipped [0, 1] reconstructions and
  images, computed here with the network directly."""
  from ae_jax import data, evaluators
  from ae_jax.core import parallel
  from ae_jax.data.dataset import stack_examples
  from ae_jax.evaluators import inception_quality
  from ae_jax.runner import experiment
  from ae_jax.training import outputs

  monkeypatch.setattr(inception_quality, "load_weights", lambda path, allow_download: variables)
  tiny_config.data = data.data_config("synthetic", shape=(8, 8, 1), num_train=16, num_test=3)
  exp = experiment.setup(tiny_config)
  section = evaluators.section("rfid", batch_size=2)
  result = evaluators.EVALUATORS["rfid"].build("rfid", section, exp.context())(
    parallel.replicate(exp.state, jax.local_devices()[:2]), 0, True
  )
  assert result.metrics["num_images"] == 3 and result.metrics["images_per_second"] > 0
  assert result.details["protocol"] == inception.PROTOCOL

  x = stack_examples(exp.dataset.split("test"), exp.dataset.info, range(3))["x"]
  recon = outputs.reconstruct(exp.model, exp.state, x)["recon"]
  unit = [np.clip(np.asarray(exp.dataset.info.to_unit(np.asarray(a, np.float32))), 0, 1) for a in (x, recon)]
  pool = np.asarray(_direct_apply(variables, np.concatenate(unit))["pool"])
  want = frechet_distance(*feature_statistics(pool[3:]), *feature_statistics(pool[:3]))
  assert want > 0
  np.testing.assert_allclose(result.metrics["rfid"], want, rtol=1e-4)


def _setup_drawing(tiny_config, variables, monkeypatch):
  """A tiny experiment on 8x8 synthetic images whose Inception evaluators use `variables`, and the list
  every samplers.draw call appends its result to."""
  from ae_jax import data
  from ae_jax.evaluators import inception_quality
  from ae_jax.generation import samplers
  from ae_jax.runner import experiment

  monkeypatch.setattr(inception_quality, "load_weights", lambda path, allow_download: variables)
  drawn = []
  draw = samplers.draw
  monkeypatch.setattr(samplers, "draw", lambda *a, **k: drawn.append(draw(*a, **k)) or drawn[-1])
  tiny_config.data = data.data_config("synthetic", shape=(8, 8, 1), num_train=16, num_test=4)
  return experiment.setup(tiny_config), drawn


def test_fid_evaluator_scores_the_drawn_samples_against_the_split(
  tiny_config, variables, monkeypatch, tmp_path
):
  """With random Inception weights injected: the fid evaluator's numbers for 3 images an autoencoder draws
  (a mixture over its training codes) are those computed here with the network directly: the Fréchet
  distance to the first 3 test images, the floor (the first 3 training images to the same test images), the
  Inception Score of the samples' bias-free logits and k-NN precision/recall on the pool features; a
  second evaluation reads the split's features from the reference cache and gives the same numbers."""
  from ae_jax import evaluators
  from ae_jax.core import parallel
  from ae_jax.data.dataset import stack_examples
  from ae_jax.metrics.sample_metrics import inception_score, precision_recall

  exp, drawn = _setup_drawing(tiny_config, variables, monkeypatch)
  options = dict(num=3, batch_size=2, components=2, k=2, splits=3, reference_cache=str(tmp_path / "ref"))
  evaluate = evaluators.EVALUATORS["fid"].build("fid", evaluators.section("fid", **options), exp.context())
  rstate = parallel.replicate(exp.state, jax.local_devices()[:2])
  result = evaluate(rstate, 0, True)
  assert result.metrics["num_images"] == 3 and len(drawn) == 1 and drawn[0].images.shape == (3, 8, 8, 1)
  assert result.metrics["reference_cached"] == 0.0

  info = exp.dataset.info
  x = stack_examples(exp.dataset.split("test"), info, range(3))["x"]
  train = stack_examples(exp.dataset.split("train"), info, range(3))["x"]
  unit = [
    np.clip(np.asarray(info.to_unit(np.asarray(a, np.float32))), 0, 1) for a in (x, drawn[0].images, train)
  ]
  out = _direct_apply(variables, np.concatenate(unit[:2]))  # 6 images: compiled once for the rfid test too
  pool, logits = np.asarray(out["pool"]), np.asarray(out["logits_unbiased"])
  real, fake = pool[:3], pool[3:]
  floor = np.asarray(_direct_apply(variables, np.concatenate([unit[2], unit[0]]))["pool"])[:3]
  want = {
    "fid": frechet_distance(*feature_statistics(fake), *feature_statistics(real)),
    "fid_floor": frechet_distance(*feature_statistics(floor), *feature_statistics(real)),
    **inception_score(logits[3:], splits=3),
    **precision_recall(real, fake, k=2),
  }
  for key, value in want.items():
    np.testing.assert_allclose(result.metrics[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
  again = evaluate(rstate, 1, True)
  assert again.metrics["reference_cached"] == 1.0
  for key in want:
    np.testing.assert_allclose(again.metrics[key], result.metrics[key], rtol=1e-6, err_msg=key)


def test_inception_score_evaluator_is_the_score_of_the_drawn_samples_logits(
  tiny_config, variables, monkeypatch
):
  """With random Inception weights injected: the inception_score evaluator's score for 6 drawn images in 2
  splits (batches of 4 over 2 devices, the last padded) is sample_metrics.inception_score of their
  bias-free logits computed here with the network directly."""
  from ae_jax import evaluators
  from ae_jax.core import parallel
  from ae_jax.metrics.sample_metrics import inception_score

  exp, drawn = _setup_drawing(tiny_config, variables, monkeypatch)
  section = evaluators.section("inception_score", num=6, batch_size=4, components=2, splits=2)
  result = evaluators.EVALUATORS["inception_score"].build("is", section, exp.context())(
    parallel.replicate(exp.state, jax.local_devices()[:2]), 0, True
  )
  assert result.metrics["num_images"] == 6 and len(drawn) == 1
  unit = np.clip(np.asarray(exp.dataset.info.to_unit(np.asarray(drawn[0].images, np.float32))), 0, 1)
  logits = np.asarray(_direct_apply(variables, unit)["logits_unbiased"])  # 6 images, as the other tests
  want = inception_score(logits, splits=2)
  assert want["inception_score"] > 1.002 and want["inception_score_std"] > 1e-4  # random weights: near 1
  got = result.metrics
  np.testing.assert_allclose(got["inception_score"] - 1, want["inception_score"] - 1, rtol=1e-3)
  np.testing.assert_allclose(got["inception_score_std"], want["inception_score_std"], rtol=1e-3)
  assert f"Inception Score {want['inception_score']:.3f}" in result.lines[0]


def test_the_inception_speed_benchmark_counts_the_networks_flops(tmp_path):
  """benchmarks.inception_speed --smoke writes its report; the compiled network's FLOPs per image are
  Inception v3's published 5.7 G multiply-adds at 299 x 299 (11.4 GFLOPs, within 10%), whatever the
  input size, so the fraction of the matmul peak it reports means what it says."""
  import json

  from benchmarks import inception_speed

  assert inception_speed.main(["--smoke", "--out", str(tmp_path)]) == 0
  report = json.loads((tmp_path / "inception_speed.json").read_text())
  (row,) = report["rows"].values()
  assert 10.3e9 < row["flops_per_image"] < 12.6e9 and row["images_per_s"] > 0
  assert "s for 10,000 images" in (tmp_path / "inception_speed.md").read_text()
