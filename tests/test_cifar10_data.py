"""CIFAR-10 from a JPEG archive (a tiny synthetic one, never the real data) and the training variance."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from ae_jax import losses
from ae_jax.data import DATASETS, cifar10, data_config, get_dataset, synthetic_images, training_variance
from ae_jax.data.images import SCALES

CLASSES = ("airplane", "cat", "truck")


def _jpeg(seed: int) -> bytes:
  image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _write_archive(path, per_class=(3, 2), extra=()) -> str:
  """tar.gz with cifar10-jpeg/{train,test}/<class>/NNNN.jpg (labels identifiable by seed)."""
  with tarfile.open(path, "w:gz") as tar:
    names = [
      f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg"
      for split, n in zip(("train", "test"), per_class, strict=True)
      for cls in CLASSES
      for i in range(n)
    ]
    for k, name in enumerate([*names, *extra]):
      data = _jpeg(k)
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return str(path)


@pytest.fixture
def archive(tmp_path):
  return _write_archive(tmp_path / "c10.tar.gz")


def test_read_archive_labels_and_class_interleaving(archive):
  files = cifar10.read_archive(archive)
  assert [len(files[s]) for s in ("train", "test")] == [9, 6]
  labels = [label for _, label, _ in files["train"]]
  idx = [cifar10.CLASS_NAMES.index(c) for c in CLASSES]
  assert labels == idx * 3  # classes take turns: 0000 of each class, then 0001, ...
  assert all(f"/{cifar10.CLASS_NAMES[label]}/" in path for path, label, _ in files["train"])


def test_unknown_class_folder_is_refused(tmp_path):
  path = _write_archive(tmp_path / "bad.tar.gz", extra=("cifar10-jpeg/train/unicorn/0000.jpg",))
  with pytest.raises(ValueError, match="unknown class folder 'unicorn'"):
    cifar10.read_archive(path)


def _load(split, *, data_dir, archive=None, root=""):
  return cifar10.load_split(split, data_config("cifar10", data_dir=data_dir, archive=archive, root=root))


def test_builder_prepares_decoded_uint8_records(archive, tmp_path):
  train = _load("train", data_dir=str(tmp_path / "tfds"), archive=archive)
  test = _load("test", data_dir=str(tmp_path / "tfds"), archive=archive)
  assert len(train) == 9 and len(test) == 6
  record = train[0]
  assert record["image"].dtype == np.uint8 and record["image"].shape == (32, 32, 3)
  path, label, data = cifar10.read_archive(archive)["train"][0]
  np.testing.assert_array_equal(record["image"], cifar10.decode_jpeg(data))
  assert int(record["label"]) == label
  # prepared once: later loads do not need the archive
  os.remove(archive)
  assert len(_load("train", data_dir=str(tmp_path / "tfds"), archive=archive)) == 9


def test_a_relative_archive_is_found_under_the_data_root_as_other_paths_are(tmp_path, monkeypatch):
  root = tmp_path / "root"
  (root / "mine").mkdir(parents=True)
  _write_archive(root / "mine" / "c10.tar.gz")
  monkeypatch.chdir(tmp_path)  # the working directory does not hold mine/c10.tar.gz
  assert len(_load("train", data_dir=str(tmp_path / "tfds"), archive="mine/c10.tar.gz", root=str(root))) == 9
  with pytest.raises(FileNotFoundError, match="set config.data.archive") as e:
    _load("train", data_dir=str(tmp_path / "tfds2"), archive="other.tar.gz", root=str(root))
  assert str(root / "other.tar.gz") in str(e.value)


def test_missing_data_is_one_clear_error_naming_the_data_root(tmp_path):
  with pytest.raises(FileNotFoundError, match="set config.data.archive") as e:
    _load("train", data_dir=str(tmp_path / "tfds"), root=str(tmp_path / "nowhere"))
  assert str(tmp_path / "nowhere" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz") in str(e.value)


def test_cifar10_dataset_carries_the_training_variance(archive, tmp_path):
  config = data_config("cifar10", scale="centered", data_dir=str(tmp_path / "tfds"), archive=archive)
  dataset = get_dataset(config)
  train, test, info = dataset.split("train"), dataset.split("test"), dataset.info
  images = np.stack([train[i]["image"] for i in range(len(train))])
  np.testing.assert_allclose(info.variance, np.var(images / 255.0), rtol=1e-6)  # float32 pixel levels
  example = info.preprocess(test[0], 0)
  assert example["x"].min() >= -0.5 and example["x"].max() <= 0.5
  assert "cifar10" in DATASETS and DATASETS["cifar10"].provides_variance


def test_variance_is_exact_and_nmse_divides_by_it():
  config = data_config("synthetic", scale="symmetric", shape=(8, 8, 1), cache_in_memory=False)
  dataset = get_dataset(config)
  train, info = dataset.split("train"), dataset.info
  x = np.stack([info.preprocess(r, 0)["x"] for r in train], dtype=np.float64)
  np.testing.assert_allclose(info.variance, np.var(x), rtol=1e-9)
  other = np.stack([r["image"] for r in synthetic_images(50, (8, 8, 1), seed=0)])
  levels = SCALES["symmetric"][0](np.arange(256, dtype=np.uint8))
  assert training_variance(other, levels) != info.variance  # other images, other variance
  batch = {"x": x[:4].astype(np.float32), "data_variance": np.full(4, info.variance, np.float32)}
  outputs = {"recon": np.zeros_like(batch["x"])}
  np.testing.assert_allclose(
    losses.LOSSES["nmse"](outputs, batch), losses.LOSSES["mse"](outputs, batch) / info.variance, rtol=1e-6
  )
  with pytest.raises(KeyError, match="data_variance"):
    losses.LOSSES["nmse"](outputs, {"x": batch["x"]})
