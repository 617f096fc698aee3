"""Tests for ae_jax.data.fashion_mnist on small synthetic idx files (never the real data)."""

import gzip
import importlib
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ae_jax.data import _tfds_builders, data_config
from ae_jax.data import fashion_mnist as fm

N_TRAIN, N_TEST = 20, 10


def _load(split, *, data_dir, idx_dir):
  return fm.load_split(split, data_config("fashion_mnist", data_dir=data_dir, idx_dir=idx_dir))


def write_idx(path, array: np.ndarray, compress: bool) -> None:
  """Writes a uint8 array in idx format (gzipped if `compress`)."""
  assert array.dtype == np.uint8
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  data = header + array.tobytes()
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if compress else data)


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  images[:, 0, 0] = np.arange(n)  # Make each image identifiable.
  labels = (np.arange(n) % 10).astype(np.uint8)
  return images, labels


@pytest.fixture
def idx_dir(tmp_path):
  """Synthetic idx dir: train files gzipped, test files plain."""
  d = tmp_path / "idx"
  d.mkdir()
  arrays = {"train": make_split(N_TRAIN, 0), "test": make_split(N_TEST, 1)}
  for split, (images_stem, labels_stem) in fm.IDX_FILES.items():
    compress = split == "train"
    suffix = ".gz" if compress else ""
    write_idx(d / (images_stem + suffix), arrays[split][0], compress)
    write_idx(d / (labels_stem + suffix), arrays[split][1], compress)
  return d, arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5), (0, 28, 28)])
def test_read_idx_round_trip(tmp_path, compress, shape):
  array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
  path = tmp_path / "a.idx"
  write_idx(path, array, compress)
  out = fm.read_idx(path)
  assert out.dtype == np.uint8 and out.shape == shape
  np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
  "content",
  [
    b"",  # empty
    b"\x00\x01\x08\x01" + np.asarray([3], ">u4").tobytes() + b"abc",  # bad magic
    b"\x00\x00\x07\x01" + np.asarray([3], ">u4").tobytes() + b"abc",  # bad dtype code
    b"\x00\x00\x08\x03\x00\x00",  # truncated header
    b"\x00\x00\x08\x01" + np.asarray([5], ">u4").tobytes() + b"abc",  # too little data
    b"\x00\x00\x08\x01" + np.asarray([2], ">u4").tobytes() + b"abc",  # trailing data
    gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01x", mtime=0)[:-6],  # truncated gzip
  ],
  ids=["empty", "bad-magic", "bad-dtype", "short-header", "short-data", "trailing-data", "short-gzip"],
)
def test_read_idx_malformed_raises(tmp_path, content):
  path = tmp_path / "bad.idx"
  path.write_bytes(content)
  with pytest.raises(ValueError, match="bad.idx"):
    fm.read_idx(path)


def test_load_prepares_then_reads_without_idx_dir(tmp_path, idx_dir):
  d, arrays = idx_dir
  data_dir = str(tmp_path / "tfds")
  for split, (images, labels) in arrays.items():
    source = _load(split, data_dir=data_dir, idx_dir=str(d))
    assert len(source) == len(images)
    for i in (0, len(images) // 2, len(images) - 1):
      record = source[i]
      assert record["image"].dtype == np.uint8 and record["image"].shape == (28, 28, 1)
      np.testing.assert_array_equal(record["image"][..., 0], images[i])
      assert int(record["label"]) == labels[i]
    all_images = np.stack([source[i]["image"] for i in range(len(source))])
    np.testing.assert_array_equal(all_images[..., 0], images)

  shutil.rmtree(d)  # Prepared data must be enough from now on.
  source = _load("train", data_dir=data_dir, idx_dir=str(d))
  assert len(source) == N_TRAIN
  np.testing.assert_array_equal(source[3]["image"][..., 0], arrays["train"][0][3])
  assert len(_load("test[:50%]", data_dir=data_dir, idx_dir=str(d))) == N_TEST // 2
  # Data sources must survive pickling (e.g. for grain worker processes).
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[5]["image"], source[5]["image"])


def test_missing_everything_raises_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError) as exc_info:
    _load("train", data_dir=str(tmp_path / "tfds"), idx_dir=str(tmp_path / "nope"))
  message = str(exc_info.value)
  assert "\n" not in message
  assert "apt-get install dataset-fashion-mnist" in message
  assert "config.data.idx_dir" in message
  assert "download=True" in message


def test_invalid_idx_files_raise_value_error(tmp_path, idx_dir):
  d, _ = idx_dir
  # Test labels claim one more record than there are images.
  write_idx(d / fm.IDX_FILES["test"][1], np.zeros(N_TEST + 1, np.uint8), compress=False)
  with pytest.raises(ValueError, match="labels"):
    _load("train", data_dir=str(tmp_path / "tfds"), idx_dir=str(d))


def test_failed_preparation_leaves_nothing_prepared(tmp_path, idx_dir, monkeypatch):
  d, _ = idx_dir
  data_dir = tmp_path / "tfds"
  original = _tfds_builders.FashionMnistIdx._generate_examples
  written = []

  def failing(self, images, labels):
    for i, example in enumerate(original(self, images, labels)):
      if len(images) == N_TEST and i == 5:  # Fail midway through the 2nd split.
        written.extend(p for p in data_dir.rglob("*train*") if p.is_file())
        raise RuntimeError("simulated crash")
      yield example

  monkeypatch.setattr(_tfds_builders.FashionMnistIdx, "_generate_examples", failing)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _load("train", data_dir=str(data_dir), idx_dir=str(d))
  assert written, "the train split should have been written before the crash"
  assert not _tfds_builders.FashionMnistIdx(data_dir=str(data_dir)).is_prepared()
  assert [p for p in data_dir.rglob("*") if p.is_file()] == []

  monkeypatch.setattr(_tfds_builders.FashionMnistIdx, "_generate_examples", original)
  assert len(_load("test", data_dir=str(data_dir), idx_dir=str(d))) == N_TEST


def test_builder_class_is_not_globally_registered():
  # Re-importing the module (or defining a same-named builder) must not raise
  # tfds' "Dataset with name ... already registered".
  importlib.reload(_tfds_builders)

  class FashionMnistIdx(_tfds_builders.FashionMnistIdx, skip_registration=True):
    pass

  assert FashionMnistIdx.name == "fashion_mnist_idx"
  assert _tfds_builders.FashionMnistIdx.name == "fashion_mnist_idx"


def test_idx_dir_defaults_to_debian_then_the_data_root(tmp_path, monkeypatch):
  monkeypatch.setattr(fm, "DEBIAN_IDX_DIR", str(tmp_path / "debian"))
  assert fm.idx_dir(data_config("fashion_mnist", root=str(tmp_path))) == tmp_path / "fashion-mnist"
  assert fm.idx_dir(data_config("fashion_mnist", idx_dir="/x")) == Path("/x")


def test_a_prepared_split_is_read_from_its_files_once_per_process_until_they_change(
  tmp_path, idx_dir, monkeypatch
):
  """get_dataset holds a prepared split in memory: opening it again reads nothing; the arrays are the
  records, read-only; a validation hold-out is a copy of the last training records; new files (the
  dataset prepared again) are read again."""
  from ae_jax.data import get_dataset, sources

  d, arrays = idx_dir
  config = data_config("fashion_mnist", data_dir=str(tmp_path / "tfds"), idx_dir=str(d))
  reads = []
  from_source = sources.ArraySource.from_source.__func__
  monkeypatch.setattr(
    sources.ArraySource,
    "from_source",
    classmethod(lambda cls, source: reads.append(len(source)) or from_source(cls, source)),
  )
  first = get_dataset(config).split("train")
  again = get_dataset(config).split("train")
  assert reads == [N_TRAIN, N_TEST] and again is first  # get_dataset reads every split
  np.testing.assert_array_equal(first.arrays["image"][..., 0], arrays["train"][0])
  with pytest.raises(ValueError, match="read-only"):
    first.arrays["image"][0, 0, 0, 0] = 1
  config.validation_size = 4
  held = get_dataset(config)
  assert reads == [N_TRAIN, N_TEST]
  np.testing.assert_array_equal(held.split("validation").arrays["image"], first.arrays["image"][-4:])
  assert held.split("validation").arrays["image"].flags.writeable

  shutil.rmtree(tmp_path / "tfds")
  images, labels = make_split(N_TRAIN, 5)
  write_idx(d / (fm.IDX_FILES["train"][0] + ".gz"), images, True)
  config.validation_size = 0
  fresh = get_dataset(config).split("train")
  assert reads == [N_TRAIN, N_TEST] * 2
  np.testing.assert_array_equal(fresh.arrays["image"][..., 0], images)


@pytest.mark.parametrize("builder", ["Cifar10Jpeg", "FashionMnistIdx", "SpokenDigitWav"])
def test_a_local_builder_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch, builder):
  """tfds looks up an unprepared builder's info in its bucket through a temporary folder it never removes;
  the local datasets have nothing there and skip the lookup."""

  scratch = tmp_path / "scratch"
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  getattr(_tfds_builders, builder)(data_dir=str(tmp_path / "tfds"))
  assert not list(scratch.iterdir())
