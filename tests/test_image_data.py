"""Image datasets from your own data: any tfds image dataset (mocked tfds), image folders, resizing."""

import io
import logging
import pathlib
import tarfile

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ae_jax import data
from ae_jax.core.errors import ConfigError, DataError, DataNotFoundError
from ae_jax.data import cifar10, image_folder, images, pipeline
from ae_jax.runner import loop
from ae_jax.runner.config import default_config

# ----------------------------------------------------------------------------- geometry


def test_geometry_center_crop_resize_and_channels():
  image = np.zeros((20, 30, 3), np.uint8)
  image[:, 5:25] = 200  # the centered 20x20 square
  g = images.Geometry(image_size=10, crop="center")
  out = g.apply(image, 0, train=False)
  assert out.shape == (10, 10, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, 200)  # the crop is exactly the bright square
  gray = images.Geometry(image_size=10, channels=1).apply(image, 0, train=False)
  assert gray.shape == (10, 10, 1) and np.all(np.abs(gray.astype(int) - 200) <= 1)
  stretched = images.Geometry(image_size=10, crop="none").apply(image, 0, train=False)
  assert stretched.shape == (10, 10, 3) and stretched[:, 0].max() < 200  # the dark sides are kept


def test_random_crop_is_keyed_by_stream_position_and_center_for_evaluation():
  image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  g = images.Geometry(image_size=16, crop="random", crop_size=32)
  a, b, c = (g.apply(image, i, train=True) for i in (5, 5, 6))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)  # another position, another crop
  center = images.Geometry(image_size=16, crop="center", crop_size=32).apply(image, 0, train=False)
  np.testing.assert_array_equal(g.apply(image, 7, train=False), center)


def test_convert_channels_composites_alpha_over_black():
  rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0]]], np.uint8)
  np.testing.assert_array_equal(images.convert_channels(rgba, 3), [[[200, 100, 50], [0, 0, 0]]])
  np.testing.assert_array_equal(images.convert_channels(np.full((1, 1, 1), 9, np.uint8), 3), [[[9, 9, 9]]])
  with pytest.raises(DataError, match="cannot convert"):
    images.convert_channels(np.zeros((1, 1, 3), np.uint8), 2)


# ----------------------------------------------------------------------------- any tfds dataset


@pytest.mark.parametrize(
  "name, options, shape",
  [
    ("celeb_a", dict(image_size=16, crop_size=148, validation_split="validation", label_key=""), (16, 16, 3)),
    ("cifar10", dict(), (32, 32, 3)),
    ("cifar10", dict(image_size=8, channels=1), (8, 8, 1)),
  ],
)
def test_any_tfds_image_dataset_through_mocked_tfds(name, options, shape):
  c = data.data_config("tfds", tfds_name=name, **options)
  assert data.example_spec(c).shape == shape
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.get_dataset(c)
    train_src = dataset.split("train")
    assert not isinstance(train_src, data.ArraySource)  # large datasets stay on disk
    assert set(dataset.splits) == set(data.split_roles(c))
    example = dataset.info.preprocess(train_src[3], 3)
    assert example["x"].shape == shape and example["x"].dtype == np.float32
    assert -1.0 <= example["x"].min() and example["x"].max() <= 1.0
    assert (dataset.info.class_names is not None) == (name == "cifar10")
    assert dataset.info.variance > 0  # estimated from the first training images


def test_tfds_dataset_needs_a_name_and_a_known_image_key():
  with pytest.raises(ConfigError, match="needs config.data.tfds_name"):
    data.example_spec(data.data_config("tfds"))
  with pytest.raises(ConfigError, match="no feature config.data.image_key='img'"):
    data.example_spec(data.data_config("tfds", tfds_name="cifar10", image_key="img"))
  with pytest.raises(ConfigError, match="vary in size.*image_size"):
    data.example_spec(data.data_config("tfds", tfds_name="imagenet2012"))


@pytest.mark.training
def test_tfds_training_is_sharded_per_process_and_resumes_exactly(tiny_config, tmp_path, monkeypatch):
  """Training on mocked celeb_a resized to 8x8: two simulated processes read disjoint halves of every
  global batch, and a run stopped at step 3 and resumed equals an unbroken one."""
  c = data.data_config("tfds", tfds_name="celeb_a", image_size=8, channels=1, label_key="")
  tiny_config.data = c
  with tfds.testing.mock_data(num_examples=64):
    dataset = data.get_dataset(c)
    src, preprocess = dataset.split("train"), dataset.info.preprocess
    halves = []
    for pid in range(2):
      monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
      monkeypatch.setattr(pipeline.jax, "process_index", lambda pid=pid: pid)
      halves.append(next(pipeline.train_batches(src, preprocess, global_batch=16, seed=0, num_threads=1)))
    monkeypatch.undo()
    whole = next(pipeline.train_batches(src, preprocess, global_batch=16, seed=0, num_threads=1))
    np.testing.assert_array_equal(
      np.stack([halves[0]["x"], halves[1]["x"]], 1).reshape(whole["x"].shape), whole["x"]
    )
    tiny_config.total_steps = 6
    full = loop.train_and_evaluate(tiny_config, str(tmp_path / "full"))
    tiny_config.total_steps = 3
    loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
    tiny_config.total_steps = 6
    resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  chex.assert_trees_all_equal(jax.device_get(full["state"].params), jax.device_get(resumed["state"].params))
  assert full["model"].input_shape == (8, 8, 1)


def _jpeg_archive(path, per_class=(4, 2)):
  with tarfile.open(path, "w:gz") as tar:
    for split, n in zip(("train", "test"), per_class, strict=True):
      for cls in ("cat", "dog"):
        for i in range(n):
          buf = io.BytesIO()
          image = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
          Image.fromarray(image).save(buf, format="JPEG")
          info = tarfile.TarInfo(f"c10/{split}/{cls}/{i:04d}.jpg")
          info.size = len(buf.getvalue())
          tar.addfile(info, io.BytesIO(buf.getvalue()))
  return str(path)


def test_tfds_reads_a_prepared_local_dataset_offline(tmp_path):
  """A dataset prepared as ArrayRecord (here the local cifar10_jpeg builder) is read through the generic
  tfds path with no network and no TensorFlow: tfds finds it by name in the data_dir."""
  archive = _jpeg_archive(tmp_path / "c10.tar.gz")
  data_dir = str(tmp_path / "tfds")
  cifar10.load_split("train", data.data_config("cifar10", data_dir=data_dir, archive=archive))
  c = data.data_config("tfds", tfds_name="cifar10_jpeg", data_dir=data_dir, scale="centered")
  dataset = data.get_dataset(c)
  assert len(dataset.split("train")) == 8 and len(dataset.split("test")) == 4
  assert dataset.info.class_names == cifar10.CLASS_NAMES and dataset.info.shape == (32, 32, 3)


# ----------------------------------------------------------------------------- image folders


def _save(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, mode).save(path)


@pytest.fixture
def folder(tmp_path):
  """train/ and test/ with class folders; odd sizes, grayscale and RGBA files among RGB ones."""
  rng = np.random.default_rng(0)
  root = tmp_path / "pictures"
  for split, n in (("train", 6), ("test", 3)):
    for cls in ("apples", "pears"):
      for i in range(n):
        h, w = (37, 23) if i % 2 else (40, 50)
        if i % 3 == 0:
          _save(root / split / cls / f"{i}.png", rng.integers(0, 256, (h, w), dtype=np.uint8))  # grayscale
        elif i % 3 == 1:
          _save(root / split / cls / f"{i}.png", rng.integers(0, 256, (h, w, 4), dtype=np.uint8))  # RGBA
        else:
          _save(root / split / cls / f"{i}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  (root / "notes.txt").write_text("not an image")
  return root


def test_image_folder_uses_split_and_class_folders(folder, tmp_path):
  c = data.data_config("image_folder", path=str(folder), image_size=16, data_dir=str(tmp_path / "tfds"))
  assert data.example_spec(c).shape == (16, 16, 1)  # channels of the first image (grayscale)
  c.channels = 3
  assert data.example_spec(c).shape == (16, 16, 3)
  dataset = data.get_dataset(c)
  assert len(dataset.split("train")) == 12 and len(dataset.split("test")) == 6
  assert dataset.info.class_names == ("apples", "pears")
  labels = sorted(int(dataset.split("train")[i]["label"]) for i in range(12))
  assert labels == [0] * 6 + [1] * 6
  record = dataset.split("train")[0]
  assert record["image"].shape == (16, 16, 3) and record["image"].dtype == np.uint8
  # the first training file, decoded and converted by hand, equals the stored record
  expected = images.Geometry(16, channels=3).apply(
    image_folder.read_image(folder / str(record["path"].decode())), 0, False
  )
  np.testing.assert_array_equal(record["image"], expected)


def test_image_folder_is_converted_once_and_again_when_files_change(folder, tmp_path, monkeypatch):
  c = data.data_config(
    "image_folder", path=str(folder), image_size=8, channels=1, data_dir=str(tmp_path / "tfds")
  )
  data.get_dataset(c)
  calls = []
  monkeypatch.setattr(image_folder, "read_image", lambda p: calls.append(p) or np.zeros((8, 8, 1), np.uint8))
  data.get_dataset(c)
  assert calls == []  # prepared: no image is decoded again
  _save(folder / "train" / "pears" / "new.png", np.zeros((9, 9), np.uint8))
  calls.clear()
  data.get_dataset(c)
  assert len(calls) > 10  # a changed folder is prepared again


def test_a_folder_over_the_cache_limit_is_not_read_into_memory(folder, tmp_path, monkeypatch):
  """cache_in_memory reads a prepared folder into RAM only up to image_folder.MAX_CACHE_BYTES: over it, the
  opened splits are the prepared files' sources, not in-memory arrays, whatever opens them."""
  from ae_jax.data import sources

  c = data.data_config("image_folder", path=str(folder), image_size=8, data_dir=str(tmp_path / "tfds"))
  assert c.cache_in_memory
  small = data.get_dataset(c)
  assert all(isinstance(s, sources.ArraySource) for s in small.splits.values())
  monkeypatch.setattr(image_folder, "MAX_CACHE_BYTES", 8 * 8)  # less than two 8x8 images
  large = data.get_dataset(c)
  assert not any(isinstance(s, sources.ArraySource) for s in large.splits.values())
  np.testing.assert_array_equal(large.split("train")[3]["image"], small.split("train")[3]["image"])


def test_image_folder_without_split_folders_splits_by_path_hash(tmp_path):
  root = tmp_path / "flat"
  for i in range(40):
    _save(root / f"img_{i:03d}.png", np.full((12, 12, 3), i, np.uint8))
  c = data.data_config("image_folder", path=str(root), test_fraction=0.25, data_dir=str(tmp_path / "tfds"))
  assert data.example_spec(c).shape == (12, 12, 3)  # image_size 0: the stored size
  listing = image_folder.scan(root, 0.25)
  test_files = {rel for rel, split, _ in listing.files if split == "test"}
  assert 4 <= len(test_files) <= 18 and listing.class_names is None
  _save(root / "img_999.png", np.zeros((12, 12, 3), np.uint8))
  again = {rel for rel, split, _ in image_folder.scan(root, 0.25).files if split == "test"}
  assert test_files <= again  # adding a file moves no other file between splits
  dataset = data.get_dataset(c)
  assert len(dataset.split("test")) == len(again) and dataset.info.class_names is None


def test_image_folder_errors_name_the_problem(folder, tmp_path):
  (folder / "train" / "apples" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  c = data.data_config("image_folder", path=str(folder), image_size=8, data_dir=str(tmp_path / "tfds"))
  with pytest.raises(DataError, match="broken.png: cannot decode this image"):
    data.get_dataset(c)
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))  # nothing half-written is left to read
  (folder / "train" / "apples" / "broken.png").unlink()
  c.image_size = 0
  with pytest.raises(DataError, match="set config.data.image_size to resize them all"):
    data.get_dataset(c)
  with pytest.raises(ConfigError, match="'center' or 'none'"):
    data.example_spec(data.data_config("image_folder", path=str(folder), crop="random"))
  with pytest.raises(FileNotFoundError, match="config.data.path .* not found"):
    data.example_spec(data.data_config("image_folder", path=str(tmp_path / "missing")))


@pytest.mark.training
def test_image_folder_trains_end_to_end(folder, tmp_path):
  config = default_config()
  config.model = {"name": "mlp_ae", "hidden": (16,), "code_dim": 4}
  config.data = data.data_config(
    "image_folder", path=str(folder), image_size=8, data_dir=str(tmp_path / "tfds")
  )
  config.update(dict(batch_size=8, eval_batch_size=8, total_steps=4, log_every=2, checkpoint_every=0))
  config.async_checkpoints = False
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(summary["metrics"]["test/mse"]) and summary["model"].input_shape == (8, 8, 1)


@pytest.mark.training
def test_vqvae_celeba64_config_trains_on_mocked_celeb_a(tmp_path):
  """The shipped 64x64 config (narrowed) runs end to end on mocked tfds celeb_a: 8x8 codes, finite losses
  on the validation and test splits."""
  from experiments.configs import vqvae_celeba64

  config = vqvae_celeba64.get_config()
  config.model.update(hidden=16, res_hidden=8)
  config.model.quantizer.update(num_codes=32, code_dim=8)
  config.data.update(num_threads=1, variance_examples=16)
  config.update(dict(batch_size=8, eval_batch_size=8, total_steps=2, log_every=1, checkpoint_every=0))
  config.async_checkpoints = False
  with tfds.testing.mock_data(num_examples=16):
    summary = loop.train_and_evaluate(config, str(tmp_path))
  metrics = summary["metrics"]
  assert np.isfinite(metrics["validation/nmse"]) and np.isfinite(metrics["test/nmse"])
  assert summary["model"].input_shape == (64, 64, 3)
  out = summary["model"].apply(
    {"params": summary["state"].params, **summary["state"].model_state},
    np.zeros((1, 64, 64, 3), np.float32),
    rngs={"sample": jax.random.key(0)},
    method="encode",
  )
  assert out.shape == (1, 8, 8, 8)


# ----------------------------------------------------------------------------- what the console shows


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_first_preparation_and_a_missing_dataset_warn_nothing(folder, tmp_path, caplog):
  """tfds warns "Variant folder ... has no dataset_info.json" when asked whether a dataset that was never
  prepared is: the first preparation of a folder, a truncated JPEG in it, and a missing dataset show
  no warning (the console prints every warning)."""
  caplog.set_level(logging.INFO)
  c = data.data_config("image_folder", path=str(folder), image_size=8, data_dir=str(tmp_path / "tfds"))
  assert len(data.get_dataset(c).split("test")) == 6
  assert any(r.getMessage().startswith("preparing image_folder") for r in caplog.records)
  truncated = folder / "train" / "apples" / "cut.jpg"
  _save(truncated, np.zeros((16, 16, 3), np.uint8))
  truncated.write_bytes(truncated.read_bytes()[:200])
  with pytest.raises(DataError, match="cut.jpg: cannot decode this image"):
    data.get_dataset(c)
  missing = data.data_config("cifar10", data_dir=str(tmp_path / "empty"), archive=str(tmp_path / "no.tar.gz"))
  with pytest.raises(DataNotFoundError, match="nothing prepared"):
    data.get_dataset(missing)
  assert _warnings(caplog) == []


def test_a_failed_download_leaves_no_empty_folders_behind(tmp_path, monkeypatch):
  """tfds creates the dataset's folders before it fails offline; the one error line is all that remains."""
  from ae_jax.data import sources

  kept = tmp_path / "other" / "downloads"
  kept.mkdir(parents=True)
  (kept / "partial.zip").write_bytes(b"x")

  def failing(name, split, data_dir, download):
    (pathlib.Path(data_dir) / "celeb_a" / "2.1.0" / "incomplete").mkdir(parents=True)
    (pathlib.Path(data_dir) / "other" / "empty").mkdir(parents=True)
    raise ConnectionError("Retrying ... failed")

  monkeypatch.setattr(tfds, "data_source", failing)
  config = data.data_config("tfds", tfds_name="celeb_a", data_dir=str(tmp_path), download=True)
  with pytest.raises(DataNotFoundError, match="tfds dataset 'celeb_a'"):
    sources.tfds_source("celeb_a", "train", config)
  assert not (tmp_path / "celeb_a").exists()
  assert (kept / "partial.zip").exists()  # another dataset's folder is not touched
