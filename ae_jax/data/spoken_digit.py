"""Free Spoken Digit Dataset (FSDD) as log-magnitude spectrogram sequences, offline and without TensorFlow.

Recordings: mono 8 kHz int16 wavs named `{digit}_{speaker}_{index}.wav` (v1.0.9: 2,500 = 10 digits x 5
speakers x 50). Official split: index 0-4 is the test set (250), the rest the training set (2,250).

Sources, in order of preference (see `load_split`):
  (a) tfds' own `spoken_digit` when TensorFlow is installed (its Audio feature needs TensorFlow even to
      read): if already prepared (array_record) in `data_dir`, or with `download=True` (prepared from the
      local archive as a manual download when it exists). It has one `train` split with every recording;
      the official split is rebuilt from its `audio/filename` field.
  (b) the local `spoken_digit_wav` builder below, prepared once from the archive (`config.data.archive`,
      else `<data root>/fsdd/free-spoken-digit-dataset-1.0.9.tar.gz`). It stores the raw int16 audio
      (variable length), label, speaker and index.

Features (`spectrogram_features`): periodic-Hann STFT with n_fft = 400 (201 bins, 50 ms) and hop 160
(20 ms), magnitude in dB relative to full scale, mapped from the fixed range DB_RANGE = [-80, 20] dB to
[0, 1] (the same for every split and speaker; 99.9% of training bins lie inside it), then cropped or
zero-padded to `num_frames` frames with a mask [T] (1 = real frame).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import tarfile
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import DataError
from ae_jax.data import dataset, sources

SAMPLE_RATE = 8000
N_FFT = 400  # 201 frequency bins
HOP = 160
NUM_FRAMES = 32  # 96% of the recordings are at most 32 frames (0.66 s) long; longer ones are cropped
DB_RANGE = (-80.0, 20.0)  # dB re full scale mapped to [0, 1]; the floor also bounds log(0)
TEST_INDICES = range(5)  # the dataset's official rule: recordings numbered 0-4 are the test set
CLASS_NAMES = tuple(str(d) for d in range(10))
ARCHIVE_NAME = "free-spoken-digit-dataset-1.0.9.tar.gz"
ARCHIVE_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.9.tar.gz"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def parse_name(filename: str | bytes) -> tuple[int, str, int]:
  """'7_jackson_32.wav' (any directory prefix) -> (digit 7, speaker 'jackson', index 32)."""
  name = os.path.basename(filename.decode() if isinstance(filename, bytes) else filename)
  m = _NAME.match(name)
  if m is None:
    raise DataError(f"not an FSDD recording name (digit_speaker_index.wav): {name!r}")
  return int(m.group(1)), m.group(2), int(m.group(3))


def split_of(index: int) -> str:
  """'test' for recordings numbered 0-4, else 'train'."""
  return "test" if index in TEST_INDICES else "train"


def read_wav(data: bytes) -> np.ndarray:
  """Mono 16-bit PCM wav bytes -> int16 samples [N]; raises ValueError for any other format."""
  with wave.open(io.BytesIO(data)) as w:
    if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
      raise DataError(
        f"expected mono 16-bit {SAMPLE_RATE} Hz audio, got {w.getnchannels()} channel(s), "
        f"{8 * w.getsampwidth()}-bit, {w.getframerate()} Hz"
      )
    return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)


def read_archive(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
  """(file name, int16 audio) for every `recordings/*.wav` of the FSDD tar.gz, sorted by name."""
  with tarfile.open(path, "r:*") as tar:
    members = [m for m in tar.getmembers() if m.isfile() and "/recordings/" in f"/{m.name}"]
    for m in sorted((m for m in members if _NAME.match(os.path.basename(m.name))), key=lambda m: m.name):
      yield os.path.basename(m.name), read_wav(tar.extractfile(m).read())


# ----------------------------------------------------------------------------- features


def num_stft_frames(num_samples: int, n_fft: int = N_FFT, hop: int = HOP) -> int:
  """Frames of `stft_magnitude`: windows at 0, hop, ... until one reaches the end (zero-padded)."""
  return 1 + -(-max(num_samples - n_fft, 0) // hop)


def stft_magnitude(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
  """|STFT| of float audio [N]: frame t is samples [t*hop, t*hop + n_fft) (end zero-padded), times a
  periodic Hann window (torch.hann_window's default). Returns float32 [num_stft_frames(N), n_fft//2 + 1]."""
  frames = num_stft_frames(len(audio), n_fft, hop)
  audio = np.pad(np.asarray(audio, np.float32), (0, (frames - 1) * hop + n_fft - len(audio)))
  windows = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop]
  hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
  return np.abs(np.fft.rfft(windows * hann, axis=-1)).astype(np.float32)


def log_spectrogram(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
  """int16-valued audio [N] -> dB magnitude mapped from DB_RANGE to [0, 1]: [frames, n_fft//2 + 1]."""
  mag = stft_magnitude(np.asarray(audio, np.float32) / 32768.0, n_fft, hop)
  lo, hi = DB_RANGE
  db = 20.0 * np.log10(np.maximum(mag, 10.0 ** (lo / 20.0)))
  return np.clip((db - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def spectrogram_features(
  audio: np.ndarray, *, num_frames: int = NUM_FRAMES, n_fft: int = N_FFT, hop: int = HOP
) -> dict[str, np.ndarray]:
  """Audio [N] -> {"x": float32 [num_frames, n_fft//2 + 1] in [0, 1], "mask": float32 [num_frames]}.

  The first `num_frames` frames are kept; shorter recordings are padded with zero frames, mask 0.
  """
  audio = np.asarray(audio)[: (num_frames - 1) * hop + n_fft]  # only what the kept frames read
  spec = log_spectrogram(audio, n_fft, hop)[:num_frames]
  x = np.zeros((num_frames, spec.shape[1]), np.float32)
  x[: len(spec)] = spec
  mask = (np.arange(num_frames) < len(spec)).astype(np.float32)
  return {"x": x, "mask": mask}


def to_image(x: np.ndarray) -> np.ndarray:
  """Spectrograms [N, T, F] in [0, 1] -> images [N, F, T, 1], low frequencies at the bottom."""
  return np.clip(np.asarray(x, np.float32).transpose(0, 2, 1)[:, ::-1, :, None], 0.0, 1.0)


# ----------------------------------------------------------------------------- sources


def _official_split(split: str) -> Callable[[Sequence], Sequence]:
  """Selects the recordings of the official `split` from tfds' single-split spoken_digit by file name."""

  def select(source: Sequence) -> Sequence:
    keep = [i for i in range(len(source)) if split_of(parse_name(source[i]["audio/filename"])[2]) == split]
    return sources.SplitView(source, keep)

  return select


def load_split(split: str, data: ml_collections.ConfigDict) -> Sequence[dict[str, Any]]:
  """A random-access FSDD split ("train" or "test"): records {"audio": int [N], "label", ...}.

  tfds' `spoken_digit` in config.data.data_dir when TensorFlow is installed (its Audio feature needs it
  even to read; it has one split, filtered here by file name), else the local `spoken_digit_wav` dataset
  prepared once from the archive (config.data.archive, else <data root>/fsdd/<archive>).
  """
  if split not in ("train", "test"):
    raise DataError(f"unknown FSDD split {split!r}; choose 'train' or 'test' (recordings 0-4 are 'test')")
  archive = Path(data.archive) if data.archive else sources.data_root(data) / "fsdd" / ARCHIVE_NAME
  has_tf = importlib.util.find_spec("tensorflow") is not None
  return sources.tfds_or_local(
    "spoken_digit" if has_tf else None,
    split,
    data,
    lambda: sources.builders().SpokenDigitWav(archive=archive, data_dir=data.data_dir),
    archive,
    f"download {ARCHIVE_URL} and set config.data.archive to it, or install ae-jax[tfds-download] "
    "(TensorFlow) and set config.data.download=True to use tfds' spoken_digit",
    tfds_split="train",
    tfds_select=_official_split(split),
  )


def _options(data: ml_collections.ConfigDict) -> dict[str, int]:
  return {"num_frames": int(data.num_frames), "n_fft": int(data.n_fft), "hop": int(data.hop)}


def _example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  """x [num_frames, n_fft // 2 + 1] with a frame mask."""
  return dataset.ExampleSpec((int(data.num_frames), int(data.n_fft) // 2 + 1), masked=True)


def _cached(source: Sequence, opts: dict[str, int]) -> sources.ArraySource:
  """Every record's spectrogram and mask computed once, held in memory (0.2 ms a recording)."""
  feats = [spectrogram_features(np.asarray(source[i]["audio"]), **opts) for i in range(len(source))]
  labels = np.asarray([int(source[i]["label"]) for i in range(len(source))], np.int32)
  return sources.ArraySource(
    {
      "spectrogram": np.stack([f["x"] for f in feats]),
      "mask": np.stack([f["mask"] for f in feats]),
      "label": labels,
    }
  )


def _load(data: ml_collections.ConfigDict) -> dataset.Dataset:
  """FSDD as x [num_frames, F], mask [num_frames], label. With cache_in_memory (default) the spectrograms
  are computed once at load time; otherwise `preprocess` computes each from the raw audio as it is read."""
  opts = _options(data)
  splits = {split: load_split(split, data) for split in ("train", "test")}
  if data.cache_in_memory:
    splits = {split: _cached(source, opts) for split, source in splits.items()}

  def preprocess(record: dict[str, Any], index: int) -> dict[str, np.ndarray]:
    del index  # deterministic features
    if "spectrogram" in record:
      feats = {"x": record["spectrogram"], "mask": record["mask"]}
    else:
      feats = spectrogram_features(np.asarray(record["audio"]), **opts)
    return {**feats, "label": np.int32(record["label"])}

  def batch_preprocess(records: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    del indices
    label = records["label"].astype(np.int32)
    return {"x": records["spectrogram"], "mask": records["mask"], "label": label}

  info = dataset.DatasetInfo(
    _example(data),
    preprocess,
    None,
    CLASS_NAMES,
    to_image,
    batch_preprocess=batch_preprocess if data.cache_in_memory else None,  # else: audio, record by record
    device_preprocess=batch_preprocess if data.cache_in_memory else None,  # array methods only: traceable
  )
  return dataset.Dataset("spoken_digit", splits, info)


dataset.register(
  dataset.DatasetSpec(
    name="spoken_digit",
    load=_load,
    options={
      "archive": ml_collections.config_dict.placeholder(str),  # None: <data root>/fsdd/<release archive>
      "num_frames": NUM_FRAMES,  # 20 ms frames kept per recording (longer ones are cropped, shorter padded)
      "n_fft": N_FFT,  # 201 frequency bins
      "hop": HOP,
    },
    example=_example,
    class_names=CLASS_NAMES,
    drawable=True,
    description="Free Spoken Digit Dataset as log-magnitude spectrograms with a frame mask",
  )
)
