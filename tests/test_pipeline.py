"""Tests for ae_jax.data.pipeline: deterministic, resumable, process-sharded train and eval batches."""

import itertools

import chex
import numpy as np
import pytest

from ae_jax.data import data_config, get_dataset, pipeline, synthetic_images

N = 64  # records
B = 16  # global batch
STEPS_PER_EPOCH = N // B


def _indexed_source(n=N):
  """Records whose 'label' is their index and whose image encodes it too."""
  return [{"image": np.full((2, 2, 1), i % 256, np.uint8), "label": i} for i in range(n)]


def _preprocess(record, index):
  """Image to float32, label to int32, plus the stream index the pipeline passed in."""
  return {
    "x": record["image"].astype(np.float32),
    "label": np.int32(record["label"]),
    "stream_index": np.int64(index),
  }


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _train(source=None, *, seed=0, start_step=0, global_batch=B, steps=2 * STEPS_PER_EPOCH):
  """The first `steps` batches of train_batches on this (possibly simulated) process."""
  source = _indexed_source() if source is None else source
  it = pipeline.train_batches(
    source, _preprocess, global_batch=global_batch, seed=seed, start_step=start_step, num_threads=1
  )
  return _take(it, steps)


# ----------------------------------------------------------------------------- train_batches


def test_train_batch_shapes_and_dtypes():
  """Each batch stacks the preprocessed examples: x [B, 2, 2, 1] float32, label [B] int32."""
  batch = _train(steps=1)[0]
  assert set(batch) == {"x", "label", "stream_index"}
  chex.assert_shape(batch["x"], (B, 2, 2, 1))
  chex.assert_shape(batch["label"], (B,))
  assert batch["x"].dtype == np.float32 and batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["x"][:, 0, 0, 0], batch["label"].astype(np.float32))


def test_train_batches_deterministic_per_seed():
  """Same seed: identical batches; another seed: another order."""
  a, b, c = _train(seed=3), _train(seed=3), _train(seed=4)
  chex.assert_trees_all_equal(a, b)
  labels_a = np.stack([x["label"] for x in a])
  labels_c = np.stack([x["label"] for x in c])
  assert not np.array_equal(labels_a, labels_c)
  # Both are still permutations of the same records within the first epoch.
  assert sorted(labels_a[:STEPS_PER_EPOCH].ravel()) == sorted(labels_c[:STEPS_PER_EPOCH].ravel())


def test_train_batches_are_shuffled():
  """The first epoch is not the identity order."""
  labels = np.concatenate([b["label"] for b in _train(steps=STEPS_PER_EPOCH)])
  assert not np.array_equal(labels, np.arange(N))


@pytest.mark.parametrize(
  "k", [1, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 2, 3 * STEPS_PER_EPOCH + 1]
)
def test_train_batches_resume(k):
  """start_step=k yields batches k, k+1, ... of the uninterrupted stream, across epoch boundaries."""
  full = _train(steps=k + 3)
  resumed = _train(start_step=k, steps=3)
  chex.assert_trees_all_equal(resumed, full[k:])


def test_train_batches_epochs_are_permutations():
  """Each epoch (N divisible by B) contains every record exactly once; epoch 2 has a new order."""
  batches = _train(steps=2 * STEPS_PER_EPOCH)
  epoch1 = np.concatenate([b["label"] for b in batches[:STEPS_PER_EPOCH]])
  epoch2 = np.concatenate([b["label"] for b in batches[STEPS_PER_EPOCH:]])
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(N))
  np.testing.assert_array_equal(np.sort(epoch2), np.arange(N))
  assert not np.array_equal(epoch1, epoch2)


def test_train_batches_pass_global_stream_index_to_preprocess():
  """preprocess(record, index) gets the position in the global stream: batch s holds s*B ... s*B + B - 1."""
  batches = _train(steps=STEPS_PER_EPOCH + 2)
  for s, batch in enumerate(batches):
    np.testing.assert_array_equal(batch["stream_index"], np.arange(s * B, (s + 1) * B))


@pytest.mark.parametrize("nproc", [2, 4])
def test_train_batches_multi_process_union_is_global_batch(as_process, nproc):
  """Simulated processes each get B // nproc examples; together they are exactly the global batch s."""
  as_process(0, 1)
  global_batches = _train(steps=STEPS_PER_EPOCH + 2)
  local = []
  for pid in range(nproc):
    as_process(pid, nproc)
    local.append(_train(steps=STEPS_PER_EPOCH + 2))
  for s, batch in enumerate(global_batches):
    parts = [local[pid][s] for pid in range(nproc)]
    for part in parts:
      chex.assert_shape(part["label"], (B // nproc,))
      chex.assert_shape(part["x"], (B // nproc, 2, 2, 1))
    union = np.concatenate([p["label"] for p in parts])
    np.testing.assert_array_equal(np.sort(union), np.sort(batch["label"]))
    assert len(set(union.tolist())) == B  # no example twice
    # Process p holds stream positions s*B + p, s*B + p + nproc, ... (strided, as the module documents).
    for pid, part in enumerate(parts):
      np.testing.assert_array_equal(part["stream_index"], s * B + pid + nproc * np.arange(B // nproc))
      np.testing.assert_array_equal(part["label"], batch["label"][pid::nproc])


def test_train_batches_multi_process_resume(as_process):
  """A simulated process resumed at step k reads its share of global batch k."""
  as_process(1, 2)
  full = _train(steps=STEPS_PER_EPOCH + 3)
  resumed = _train(start_step=STEPS_PER_EPOCH + 1, steps=2)
  chex.assert_trees_all_equal(resumed, full[STEPS_PER_EPOCH + 1 :])


def test_train_batches_with_synthetic_dataset():
  """get_dataset('synthetic') + train_batches: x float32 [B, 28, 28, 1] in [-1, 1], matching the records."""
  dataset = get_dataset(data_config("synthetic", num_train=96, num_test=32))
  train, test, info = dataset.split("train"), dataset.split("test"), dataset.info
  assert len(train) == 96 and len(test) == 32 and info.shape == (28, 28, 1)
  batch = next(pipeline.train_batches(train, info.preprocess, global_batch=B, seed=0, num_threads=1))
  chex.assert_shape(batch["x"], (B, 28, 28, 1))
  assert batch["x"].dtype == np.float32 and batch["label"].dtype == np.int32
  assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
  # Each example is one of the records, scaled by /127.5 - 1, with its label.
  images = np.stack([r["image"] for r in train]).astype(np.float32) / 127.5 - 1.0
  labels = np.array([r["label"] for r in train])
  for x, label in zip(batch["x"], batch["label"], strict=True):
    matches = np.flatnonzero(np.all(np.abs(images - x) < 1e-6, axis=(1, 2, 3)))
    assert len(matches) >= 1 and label in labels[matches]
  chex.assert_trees_all_equal(train, synthetic_images(96, (28, 28, 1), seed=1))  # deterministic source


# ----------------------------------------------------------------------------- eval_batches


def _eval(source, *, global_batch=B, max_examples=None):
  it = pipeline.eval_batches(
    source, _preprocess, global_batch=global_batch, num_threads=1, max_examples=max_examples
  )
  return list(it)


@pytest.mark.parametrize("n", [48, 49, 40, 5])
def test_eval_batches_cover_every_record_once(n):
  """Every record appears once with valid=1, in order; the padded tail has valid=0 and repeats record 0."""
  source = _indexed_source(n)
  batches = _eval(source)
  assert len(batches) == pipeline.num_eval_batches(n, B) == -(-n // B)
  valid = np.concatenate([b["valid"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  label = np.concatenate([b["label"] for b in batches])
  for b in batches:
    chex.assert_shape([b["valid"], b["index"], b["label"]], (B,))
    assert b["valid"].dtype == np.float32 and b["index"].dtype == np.int32
  np.testing.assert_array_equal(index, np.arange(len(batches) * B))
  np.testing.assert_array_equal(valid, (np.arange(len(batches) * B) < n).astype(np.float32))
  np.testing.assert_array_equal(label[:n], np.arange(n))
  np.testing.assert_array_equal(label[n:], 0)  # padding repeats record 0
  assert valid.sum() == n


def test_eval_batches_max_examples():
  """max_examples truncates the evaluation to the first max_examples records (then pads)."""
  batches = _eval(_indexed_source(64), max_examples=20)
  assert len(batches) == 2
  valid = np.concatenate([b["valid"] for b in batches])
  label = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(label[valid > 0], np.arange(20))
  assert valid.sum() == 20


class _IntIndexOnlySource:
  """A random-access source that, like tfds' data sources, accepts integer keys only (no slices)."""

  def __init__(self, records):
    self._records = records

  def __len__(self):
    return len(self._records)

  def __getitem__(self, key):
    return self._records[key.__index__()]


def test_eval_batches_max_examples_with_int_only_source():
  """max_examples works for sources that only take integer keys, such as tfds data sources."""
  batches = _eval(_IntIndexOnlySource(_indexed_source(64)), max_examples=20)
  label = np.concatenate([b["label"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(label[valid > 0], np.arange(20))


@pytest.mark.parametrize("n", [48, 41])
def test_eval_batches_multi_process(as_process, n):
  """Two simulated processes run the same number of batches and together cover each record once."""
  source = _indexed_source(n)
  per_process = []
  for pid in range(2):
    as_process(pid, 2)
    per_process.append(_eval(source))
  assert len(per_process[0]) == len(per_process[1]) == pipeline.num_eval_batches(n, B)
  all_index, all_valid = [], []
  for s, (b0, b1) in enumerate(zip(*per_process, strict=True)):
    chex.assert_shape([b0["index"], b1["index"]], (B // 2,))
    # Global batch s is records [s*B, (s+1)*B); process p holds its p-th contiguous half.
    np.testing.assert_array_equal(b0["index"], s * B + np.arange(B // 2))
    np.testing.assert_array_equal(b1["index"], s * B + B // 2 + np.arange(B // 2))
    for b in (b0, b1):
      all_index.append(b["index"])
      all_valid.append(b["valid"])
      np.testing.assert_array_equal(b["valid"], (b["index"] < n).astype(np.float32))
      np.testing.assert_array_equal(b["label"], np.where(b["index"] < n, b["index"], 0))
  index, valid = np.concatenate(all_index), np.concatenate(all_valid)
  np.testing.assert_array_equal(np.sort(index[valid > 0]), np.arange(n))


# --------------------------------------------------------------------- eval_batch_indices, num_eval_batches


@pytest.mark.parametrize(
  "n,batch,expected",
  [(0, 16, 0), (1, 16, 1), (15, 16, 1), (16, 16, 1), (17, 16, 2), (32, 16, 2), (33, 16, 3), (1000, 1, 1000)],
)
def test_num_eval_batches(n, batch, expected):
  """num_eval_batches = ceil(n / batch): exact multiples need no extra batch, one more record needs one."""
  assert pipeline.num_eval_batches(n, batch) == expected


def test_eval_indices_exact_multiple_has_no_padding():
  """32 records in batches of 16: every position is its own record, valid."""
  for step in range(pipeline.num_eval_batches(32, 16)):
    positions, records, valid = pipeline.eval_batch_indices(step, 16, 32)
    np.testing.assert_array_equal(positions, step * 16 + np.arange(16))
    np.testing.assert_array_equal(records, positions)
    assert valid.all()


def test_eval_indices_one_extra_record():
  """33 records in batches of 16 pad to 48: position 32 is real, positions 33..47 read record 0, invalid."""
  positions, records, valid = pipeline.eval_batch_indices(2, 16, 33)
  np.testing.assert_array_equal(positions, 32 + np.arange(16))
  np.testing.assert_array_equal(records, [32] + [0] * 15)
  np.testing.assert_array_equal(valid, [True] + [False] * 15)
