"""FSDD spectrograms on a tiny synthetic archive (never the real data); the seq_vae config end to end."""

import io
import tarfile
import wave

import jax
import numpy as np
import pytest

from ae_jax import data
from ae_jax.data import data_config
from ae_jax.data import spoken_digit as sd
from ae_jax.runner import loop
from ae_jax.training import checkpoint, train
from experiments.configs import seq_vae_spoken_digit

ROOT = "free-spoken-digit-dataset-1.0.9"
DIGITS, SPEAKERS, INDICES = (3, 7), ("ann", "bob"), range(8)  # 2 x 2 x 5 = 20 test, 2 x 2 x 3 = 12 train


def _wav_bytes(samples: np.ndarray, rate: int = sd.SAMPLE_RATE) -> bytes:
  buf = io.BytesIO()
  with wave.open(buf, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(samples.astype("<i2").tobytes())
  return buf.getvalue()


def _audio(digit: int, speaker: str, index: int) -> np.ndarray:
  """A decaying tone whose pitch and length identify the recording: 100 to 240 samples."""
  n = 100 + 20 * index
  t = np.arange(n) / sd.SAMPLE_RATE
  pitch = 300 * (digit + 1) + 50 * SPEAKERS.index(speaker)
  return (8000 * np.sin(2 * np.pi * pitch * t) * np.exp(-t * 20)).astype(np.int16)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  path = tmp_path_factory.mktemp("fsdd") / sd.ARCHIVE_NAME
  files = {f"{ROOT}/README.md": b"not a recording", f"{ROOT}/utils/0_x_0.wav": _wav_bytes(np.zeros(9))}
  for d in DIGITS:
    for s in SPEAKERS:
      for i in INDICES:
        files[f"{ROOT}/recordings/{d}_{s}_{i}.wav"] = _wav_bytes(_audio(d, s, i))
  with tarfile.open(path, "w:gz") as tar:
    for name, content in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, archive):
  """A tfds data_dir with spoken_digit_wav prepared from the synthetic archive (once per module)."""
  d = str(tmp_path_factory.mktemp("tfds"))
  sd.load_split("train", data_config("spoken_digit", data_dir=d, archive=archive))
  return d


def test_names_and_the_official_split_rule():
  assert sd.parse_name("recordings/7_jackson_32.wav") == (7, "jackson", 32)
  assert sd.parse_name(b"0_george_0.wav") == (0, "george", 0)
  assert [sd.split_of(i) for i in range(7)] == ["test"] * 5 + ["train"] * 2
  assert sd.split_of(49) == "train"
  with pytest.raises(ValueError, match="digit_speaker_index"):
    sd.parse_name("7_jackson.wav")


def test_stft_matches_numpy_rfft_and_peaks_at_the_sine_bin():
  n_fft, hop, k = 400, 160, 37  # bin k is k * 8000 / 400 = 740 Hz
  t = np.arange(4000) / sd.SAMPLE_RATE
  audio = np.sin(2 * np.pi * k * sd.SAMPLE_RATE / n_fft * t).astype(np.float32)
  mag = sd.stft_magnitude(audio, n_fft, hop)
  assert mag.shape == (sd.num_stft_frames(4000, n_fft, hop), 201) == (24, 201)
  assert np.all(mag[:-1].argmax(axis=1) == k)  # the last frame is partly zero padding, but still peaks there
  assert mag[-1].argmax() == k
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  for frame in (0, 9):
    ref = np.abs(np.fft.rfft(audio[frame * hop : frame * hop + n_fft] * window))
    np.testing.assert_allclose(mag[frame], ref, rtol=1e-4, atol=1e-3)


def test_features_are_cropped_padded_masked_and_in_unit_range():
  loud = (20000 * np.sin(np.arange(5000) * 0.3)).astype(np.int16)
  short = sd.spectrogram_features(loud[:1000], num_frames=32)  # 1 + ceil(600 / 160) = 5 frames
  assert short["x"].shape == (32, 201) and short["x"].dtype == np.float32
  np.testing.assert_array_equal(short["mask"], (np.arange(32) < 5).astype(np.float32))
  assert np.all(short["x"][5:] == 0.0) and short["x"][:5].max() > 0.9
  long = sd.spectrogram_features(loud, num_frames=8)  # cropped: the first 8 of 30 frames
  np.testing.assert_array_equal(long["mask"], np.ones(8))
  np.testing.assert_allclose(long["x"], sd.log_spectrogram(loud)[:8], atol=1e-6)
  silent = sd.spectrogram_features(np.zeros(3000, np.int16))
  assert silent["x"].min() == silent["x"].max() == 0.0  # the floor of DB_RANGE
  assert 0.0 <= long["x"].min() and long["x"].max() <= 1.0


def test_to_image_puts_low_frequencies_at_the_bottom():
  x = np.zeros((2, 5, 201), np.float32)
  x[:, :, 0] = 1.0
  img = sd.to_image(x)
  assert img.shape == (2, 201, 5, 1)
  assert np.all(img[:, -1] == 1.0) and np.all(img[:, :-1] == 0.0)


def test_builder_keeps_the_official_split_and_the_raw_audio(data_dir, archive):
  test = sd.load_split(
    "test", data_config("spoken_digit", data_dir=data_dir, archive="/nonexistent")
  )  # prepared: archive not needed
  train_ = sd.load_split("train", data_config("spoken_digit", data_dir=data_dir, archive="/nonexistent"))
  assert (len(train_), len(test)) == (12, 20)
  for source, split in ((train_, "train"), (test, "test")):
    for i in range(len(source)):
      r = source[i]
      digit, speaker, index = sd.parse_name(r["filename"])
      assert sd.split_of(index) == split and r["index"] == index and r["label"] == digit
      assert r["speaker"].decode() == speaker and r["audio"].dtype == np.int16
      np.testing.assert_array_equal(r["audio"], _audio(digit, speaker, index))


def test_missing_archive_says_how_to_get_the_data(tmp_path):
  with pytest.raises(FileNotFoundError, match="set config.data.archive"):
    sd.load_split(
      "train", data_config("spoken_digit", data_dir=str(tmp_path), archive=str(tmp_path / "missing.tar.gz"))
    )


def _config(data_dir, archive, **data_overrides):
  c = seq_vae_spoken_digit.get_config()
  c.data.update(dict(archive=archive, data_dir=data_dir, num_frames=6, n_fft=32, hop=16, **data_overrides))
  return c


def test_cached_and_streamed_features_agree(data_dir, archive):
  c = _config(data_dir, archive)
  assert data.example_spec(c.data) == data.ExampleSpec((6, 17), masked=True)
  cached = data.get_dataset(c.data)
  train_c, test_c, info = cached.split("train"), cached.split("test"), cached.info
  c.data.cache_in_memory = False
  streamed = data.get_dataset(c.data)
  train_s, test_s, info_s = streamed.split("train"), streamed.split("test"), streamed.info
  assert isinstance(train_c, data.ArraySource) and not isinstance(train_s, data.ArraySource)
  for a, b, i in ((train_c, train_s, 3), (test_c, test_s, 11)):
    ea, eb = info.preprocess(a[i], i), info_s.preprocess(b[i], i)
    assert ea["x"].shape == info.shape == (6, 17) and ea["mask"].shape == (6,)
    for k in ("x", "mask", "label"):
      np.testing.assert_array_equal(ea[k], eb[k])
  assert info.class_names == sd.CLASS_NAMES and info.to_image(ea["x"][None]).shape == (1, 17, 6, 1)


@pytest.mark.training
def test_config_trains_and_restores_batchnorm_statistics(data_dir, archive, tmp_path):
  """The experiment config (tiny sizes), 8 devices: the checkpoint restores the BatchNorm statistics.

  (`python -m experiments.main` rerun on a finished workdir restores the same way and reports the same
  test metrics; restoring here avoids compiling the evaluation twice.)"""
  c = _config(data_dir, archive)
  c.model.latent_dim = 4
  c.update(dict(batch_size=8, eval_batch_size=16, total_steps=3, log_every=1, checkpoint_every=3))
  c.async_checkpoints = False
  first = loop.train_and_evaluate(c, str(tmp_path))
  assert first["model"].axis_name == "batch" and first["model"].input_shape == (6, 17)
  stats = first["state"].model_state["batch_stats"]
  assert not np.allclose(stats["encoder"]["norm_0"]["var"], 1.0)  # moved away from the initial value
  assert np.isfinite(first["metrics"]["test/loss"]) and first["metrics"]["test/kl"] > 0
  model, _, tx, _ = train.build(c, first["dataset"].info.shape)
  template = train.create_train_state(model, tx, np.zeros((1, 6, 17), np.float32), c.seed)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=3, async_save=False)
  assert ckpt.latest_step() == 3
  restored = ckpt.restore(3, template, c.to_dict())
  ckpt.close()
  np.testing.assert_array_equal(template.model_state["batch_stats"]["encoder"]["norm_0"]["var"], 1.0)  # fresh
  jax.tree.map(np.testing.assert_array_equal, restored.model_state, first["state"].model_state)
  jax.tree.map(np.testing.assert_array_equal, restored.params, first["state"].params)
