"""Batch-level input: `sources.gather`, the datasets' batch preprocessing and the batch pipeline give
bitwise the batches of the record-by-record definition (`stream_record` + per-record preprocess)."""

import itertools
import os

import ml_collections
import numpy as np
import pytest

from ae_jax.data import data_config, dataset, get_dataset, images, pipeline, sources, spoken_digit
from ae_jax.data.images import synthetic_images

B = 12  # global batch: splits over 1, 2, 3 processes


def reference_train_batch(source, preprocess, seed, step, global_batch, pid=0, nproc=1):
  """Training batch `step` of process pid, record by record: positions p + P * (step * b + j)."""
  b = global_batch // nproc
  positions = [pid + nproc * (step * b + j) for j in range(b)]
  return dataset.stack_outputs([preprocess(pipeline.stream_record(source, seed, p), p) for p in positions])


def reference_eval_batches(source, preprocess, global_batch, pid=0, nproc=1):
  """Every evaluation batch of process pid, record by record; padding repeats record 0 with valid 0."""
  n, local = len(source), global_batch // nproc
  out = []
  for step in range(-(-n // global_batch)):
    examples = []
    for j in range(local):
      i = step * global_batch + pid * local + j
      example = preprocess(source[i] if i < n else source[0], i)
      examples.append({**example, "valid": np.float32(i < n), "index": np.int32(i)})
    out.append(dataset.stack_outputs(examples))
  return out


def assert_bitwise(got, want):
  assert set(got) == set(want)
  for k in want:
    g, w = np.asarray(got[k]), np.asarray(want[k])
    assert (g.dtype, g.shape) == (w.dtype, w.shape), k
    assert g.tobytes() == w.tobytes(), k


def _train(source, info, steps, *, seed=0, start_step=0, num_threads=1, num_workers=0, global_batch=B):
  it = pipeline.train_batches(
    source,
    None,
    batch_preprocess=info.batch_preprocess_for(True),
    global_batch=global_batch,
    seed=seed,
    start_step=start_step,
    num_threads=num_threads,
    num_workers=num_workers,
  )
  return list(itertools.islice(it, steps))


def _image_config(**overrides):
  return ml_collections.ConfigDict({"scale": "symmetric", "binarize": "none", **overrides})


def _synthetic(n=40, shape=(6, 5, 1), kind="list"):
  """Synthetic image records as a list, an ArraySource, or a SplitView over a larger ArraySource."""
  records = synthetic_images(n + 7 if kind == "view" else n, shape, seed=3)
  if kind == "list":
    return records
  array = sources.ArraySource.from_source(records)
  return array if kind == "array" else sources.SplitView(array, np.arange(n + 7)[::-1][:n])


# ----------------------------------------------------------------------------- indices


@pytest.mark.parametrize("n", [40, 5, 12])
def test_train_batch_indices_follow_the_stream(n):
  """Positions p + P * (s * b + j); records the epoch permutations' entries, also where a batch spans one
  epoch boundary (n = 40: step 3 covers positions 36..47) or several (n = 5 < B)."""
  for nproc in (1, 2, 3):
    b = B // nproc
    for pid, step, seed in itertools.product(range(nproc), (0, 3, 7), (0, 5)):
      positions, records = pipeline.train_batch_indices(seed, step, B, n, pid, nproc)
      assert positions.dtype == records.dtype == np.int64 and positions.shape == records.shape == (b,)
      np.testing.assert_array_equal(positions, pid + nproc * (step * b + np.arange(b)))
      want = [pipeline.epoch_permutation(seed, p // n, n)[p % n] for p in positions]
      np.testing.assert_array_equal(records, want)


def test_epoch_permutation_is_read_only():
  """The cached permutation is shared: writing to it would change later batches, so it cannot be written."""
  with pytest.raises(ValueError):
    pipeline.epoch_permutation(0, 0, 10)[0] = 3


# ----------------------------------------------------------------------------- gather


class _GetItems:
  """A source with `__getitems__` (as tfds data sources have) that counts its calls."""

  def __init__(self, records):
    self.records, self.calls = records, 0

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i.__index__()]

  def __getitems__(self, keys):
    self.calls += 1
    assert all(type(k) is int for k in keys)
    return [self.records[k] for k in keys]


def test_gather_equals_records_for_every_source_kind():
  """ArraySource, SplitView, __getitems__ and plain sequences gather the same stacked fields."""
  records = synthetic_images(20, (3, 2, 1), seed=0)
  indices = np.array([4, 0, 19, 4, 7])
  want = dataset.stack_outputs([records[i] for i in indices])
  array = sources.ArraySource.from_source(records)
  getitems = _GetItems(records)
  view = sources.SplitView(sources.ArraySource.from_source(records[::-1]), np.arange(20)[::-1])
  for source in (records, array, getitems, view, sources.SplitView(getitems, np.arange(20))):
    assert_bitwise(sources.gather(source, indices), want)
  assert getitems.calls == 2  # one call a batch


def test_gather_keeps_ragged_arrays_and_bytes_as_objects():
  """Fields that do not stack (arrays of different shapes, bytes ending in NUL) come back as they are."""
  records = [{"audio": np.arange(3 + i), "blob": b"ab\x00" * (i + 1), "label": i} for i in range(4)]
  got = sources.gather(records, [2, 0])
  assert got["audio"].dtype == object and got["blob"].dtype == object
  np.testing.assert_array_equal(got["audio"][0], np.arange(5))
  assert got["blob"][1] == b"ab\x00" and got["label"].tolist() == [2, 0]


# ----------------------------------------------------------------------------- image datasets


@pytest.mark.parametrize("kind", ["list", "array", "view"])
@pytest.mark.parametrize(
  "options", [{"scale": s} for s in ("symmetric", "unit", "centered", "binary")] + [{"binarize": "dynamic"}]
)
def test_image_batches_equal_the_record_path(kind, options):
  """Scaled and dynamically binarised images: batch path == per-record path for steps 0..4 (step 3
  straddles the end of epoch 0), and resumed at step 3."""
  source = _synthetic(kind=kind)
  info = images.image_info(_image_config(**options), (6, 5, 1))
  got = _train(source, info, 5, seed=2)
  for step, batch in enumerate(got):
    assert_bitwise(batch, reference_train_batch(source, info.preprocess, 2, step, B))
  assert got[0]["x"].dtype == np.float32 and got[0]["label"].dtype == np.int32
  for a, b in zip(_train(source, info, 2, seed=2, start_step=3), got[3:], strict=True):
    assert_bitwise(a, b)


def test_batch_scale_is_bitwise_the_per_image_scale():
  """Every uint8 value maps through the batch preprocessing exactly as through the per-image scale."""
  values = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
  for scale in ("symmetric", "unit", "centered", "binary"):
    info = images.image_info(_image_config(scale=scale), (1, 1, 1))
    got = info.batch_preprocess({"image": values}, np.arange(256))["x"]
    assert got.tobytes() == images.SCALES[scale][0](values).tobytes()


def test_binarize_batch_is_the_per_image_binarisation():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (5, 4, 3, 2), dtype=np.uint8)
  keys = np.array([0, 7, 2**40, 3, 7])
  got = images.binarize_batch(imgs, keys)
  assert got.dtype == np.float32 and got.shape == imgs.shape
  for j in range(5):
    assert got[j].tobytes() == images.binarize(imgs[j], int(keys[j])).tobytes()


@pytest.mark.parametrize("crop", ["random", "center", "none"])
def test_geometry_batches_equal_the_record_path(crop):
  """Random/center crop + bicubic resize + RGB -> gray: training and evaluation batches, batch path ==
  per-record path; also for images of different sizes (an object field)."""
  geometry = images.Geometry(image_size=4, crop=crop, crop_size=5 if crop != "none" else 0, channels=1)
  info = images.image_info(_image_config(scale="unit"), (4, 4, 1), geometry=geometry)
  fixed = _synthetic(24, (7, 6, 3), kind="array")
  ragged = [
    {"image": r["image"][: 6 + i % 3], "label": r["label"]} for i, r in enumerate(_synthetic(24, (8, 6, 3)))
  ]
  for source in (fixed, ragged):
    for step, batch in enumerate(_train(source, info, 3, seed=1)):
      assert_bitwise(batch, reference_train_batch(source, info.preprocess, 1, step, B))
    evals = pipeline.eval_batches(
      source, None, batch_preprocess=info.batch_preprocess_for(False), global_batch=B
    )
    for a, b in zip(evals, reference_eval_batches(source, info.eval_preprocess, B), strict=True):
      assert_bitwise(a, b)


def test_geometry_that_changes_nothing_returns_the_batch():
  imgs = np.zeros((3, 4, 4, 3), np.uint8)
  assert images.Geometry().apply_batch(imgs, np.arange(3), True) is imgs
  assert images.Geometry(channels=1).apply_batch(imgs, np.arange(3), True).shape == (3, 4, 4, 1)


# ----------------------------------------------------------------------------- processes, threads, eval


@pytest.mark.parametrize("nproc", [2, 3])
def test_process_slices_equal_the_record_path(as_process, nproc):
  """Process p of P reads positions p + P * (s * b + j): each process's batch equals the per-record
  reference, and together they are the single-process batch, interleaved."""
  source = _synthetic(kind="array")
  info = images.image_info(_image_config(binarize="dynamic"), (6, 5, 1))
  as_process(0, 1)
  whole = _train(source, info, 4, seed=4)
  for pid in range(nproc):
    as_process(pid, nproc)
    for step, part in enumerate(_train(source, info, 4, seed=4)):
      assert_bitwise(part, reference_train_batch(source, info.preprocess, 4, step, B, pid, nproc))
      np.testing.assert_array_equal(part["x"], whole[step]["x"][pid::nproc])
    resumed = _train(source, info, 1, seed=4, start_step=3)[0]
    assert_bitwise(resumed, reference_train_batch(source, info.preprocess, 4, 3, B, pid, nproc))


def test_thread_counts_give_the_same_batches():
  source = _synthetic(kind="array")
  info = images.image_info(_image_config(), (6, 5, 1))
  runs = [_train(source, info, 6, num_threads=t) for t in (1, 2, 3)]
  for batches in runs[1:]:
    for a, b in zip(batches, runs[0], strict=True):
      assert_bitwise(a, b)


def test_worker_processes_give_the_same_batches():
  """num_workers=2 (spawned processes): training batches with random crops, resizes and dynamic
  binarisation (the first ones through the pipe, the rest through shared-memory slots), a resumed stream
  and the evaluation batches are bitwise those of the caller's thread; no slot outlives its stream."""
  from ae_jax.data import worker_processes

  geometry = images.Geometry(image_size=48, crop="random", crop_size=40, channels=1)
  info = images.image_info(_image_config(scale="binary", binarize="dynamic"), (48, 48, 1), geometry=geometry)
  assert B * 48 * 48 * 4 > worker_processes.MIN_SLOT_BYTES  # the float32 batches qualify for slots
  source = [
    {"image": r["image"][: 50 + i % 3], "label": r["label"]}
    for i, r in enumerate(_synthetic(24, (52, 48, 3)))
  ]
  mine = worker_processes.slot_prefix()  # other processes' blocks may come and go meanwhile
  want = _train(source, info, 8, seed=2)
  for a, b in zip(_train(source, info, 8, seed=2, num_workers=2), want, strict=True):
    assert_bitwise(a, b)
  assert not [n for n in os.listdir(worker_processes.SHM) if n.startswith(mine)]
  assert_bitwise(_train(source, info, 1, seed=2, start_step=3, num_workers=1)[0], want[3])
  evals = [
    list(pipeline.eval_batches(source, None, batch_preprocess=info.batch_preprocess_for(False), **kw))
    for kw in ({"global_batch": B}, {"global_batch": B, "num_workers": 2})
  ]
  for a, b in zip(*evals, strict=True):
    assert_bitwise(a, b)


def _failing_in_worker(records, positions):
  from ae_jax.core.errors import DataError

  raise DataError("images/7.jpg: cannot decode this image; remove or replace it")


def _dying_worker(records, positions):
  import os

  os._exit(3)


def test_worker_errors_are_raised_where_the_batch_is_consumed():
  """A worker's own error reaches the caller as it is; a worker that dies, and a reader that cannot be
  sent to workers, are one project error naming config.data.num_workers."""
  import threading

  from ae_jax.core.errors import ConfigError, DataError

  def batches(fn, num_workers=1):
    return pipeline.train_batches(
      _synthetic(), None, batch_preprocess=fn, global_batch=B, seed=0, num_workers=num_workers
    )

  with pytest.raises(DataError, match="images/7.jpg: cannot decode"):
    next(batches(_failing_in_worker))
  with pytest.raises(DataError, match="a data worker process died.*num_workers"):
    next(batches(_dying_worker))
  lock = threading.Lock()
  with pytest.raises(ConfigError, match="num_workers=2: this dataset's reader cannot be sent"):
    next(batches(lambda records, positions: (lock, records)[1], num_workers=2))


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_failing_batch_raises_where_it_is_consumed(num_threads):
  def fail(records, indices):
    raise RuntimeError("bad record")

  it = pipeline.train_batches(
    _synthetic(), None, batch_preprocess=fail, global_batch=B, seed=0, num_threads=num_threads
  )
  with pytest.raises(RuntimeError, match="bad record"):
    next(it)


@pytest.mark.parametrize("n,nproc", [(41, 1), (41, 2), (36, 3), (5, 3)])
def test_eval_batches_equal_the_record_path(as_process, n, nproc):
  """Padding (record 0, valid 0), index and per-process contiguous slices as the per-record reference."""
  source = _synthetic(n, kind="array")
  info = images.image_info(_image_config(binarize="dynamic"), (6, 5, 1))
  for pid in range(nproc):
    as_process(pid, nproc)
    got = list(
      pipeline.eval_batches(source, None, batch_preprocess=info.batch_preprocess_for(False), global_batch=B)
    )
    want = reference_eval_batches(source, info.preprocess, B, pid, nproc)
    assert len(got) == len(want) == pipeline.num_eval_batches(n, B)
    for a, b in zip(got, want, strict=True):
      assert_bitwise(a, b)


# ----------------------------------------------------------------------------- other datasets, fallback


def test_per_record_fallback_equals_the_record_path():
  """A DatasetInfo without batch functions: batch_preprocess_for applies (eval_)preprocess per record."""

  def prep(record, index):
    return {"x": record["image"].astype(np.float32) * 2 + index, "label": np.int32(record["label"])}

  def eval_prep(record, index):
    return {"x": record["image"].astype(np.float32), "label": np.int32(-record["label"])}

  info = dataset.DatasetInfo(dataset.ExampleSpec((6, 5, 1)), prep, eval_prep)
  source = _synthetic()
  for step, batch in enumerate(_train(source, info, 4)):
    assert_bitwise(batch, reference_train_batch(source, prep, 0, step, B))
  evals = pipeline.eval_batches(
    source, None, batch_preprocess=info.batch_preprocess_for(False), global_batch=B
  )
  for a, b in zip(evals, reference_eval_batches(source, eval_prep, B), strict=True):
    assert_bitwise(a, b)


def test_series_windows_batches_equal_the_record_path(tmp_path):
  t = np.arange(400)
  np.save(tmp_path / "s.npy", np.stack([np.sin(t / 7.0), np.cos(t / 5.0)], 1))
  dataset = get_dataset(data_config("series_file", path=str(tmp_path / "s.npy"), window=16, stride=3))
  source, info = dataset.split("train"), dataset.info
  assert info.batch_preprocess is not None
  for step, batch in enumerate(_train(source, info, 5, seed=3)):
    assert_bitwise(batch, reference_train_batch(source, info.preprocess, 3, step, B))


def test_synthetic_sequences_batches_equal_the_record_path():
  dataset = get_dataset(data_config("synthetic_sequences", num_train=30, time=8))
  source, info = dataset.split("train"), dataset.info
  for step, batch in enumerate(_train(source, info, 4)):
    assert_bitwise(batch, reference_train_batch(source, info.preprocess, 0, step, B))


@pytest.mark.parametrize("cache", [True, False])
def test_spoken_digit_batches_equal_the_record_path(monkeypatch, cache):
  """Cached spectrograms (the batch function) and streamed variable-length audio (record by record)."""
  rng = np.random.default_rng(0)

  def load_split(split, data):
    return [
      {"audio": rng.integers(-9000, 9000, 80 + 13 * i).astype(np.int16), "label": i % 10} for i in range(20)
    ]

  monkeypatch.setattr(spoken_digit, "load_split", load_split)
  dataset = get_dataset(data_config("spoken_digit", num_frames=4, n_fft=16, hop=8, cache_in_memory=cache))
  source, info = dataset.split("train"), dataset.info
  assert (info.batch_preprocess is not None) == cache
  for step, batch in enumerate(_train(source, info, 3)):
    assert_bitwise(batch, reference_train_batch(source, info.preprocess, 0, step, B))


def test_gather_reads_record_by_record_when_getitems_cannot_be_called():
  """tfds.testing.mock_data's `__getitems__` raises TypeError when called: the records are read one by
  one instead; an error of the records themselves is still raised."""

  class Uncallable(_GetItems):
    def __getitems__(self, keys):
      raise TypeError("missing 1 required positional argument")

  records = synthetic_images(6, (2, 2, 1), seed=0)
  assert_bitwise(sources.gather(Uncallable(records), [3, 1]), dataset.stack_outputs([records[3], records[1]]))
  with pytest.raises(TypeError):
    sources.gather(Uncallable([{"x": 1}, None]), [0, 1])
