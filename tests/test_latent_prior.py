"""Continuous codes as a generator: an autoencoder's codes under a fitted Gaussian mixture, a VAE's under
N(0, I), decoded by the run's own decoder; and `experiments.sample --prior` on such runs."""

import os
import types

import jax
import ml_collections
import numpy as np
import pytest

from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.generation import latent, stage_one
from ae_jax.models import model_config
from ae_jax.runner import loop
from tests.conftest import make_tiny_config


def _train(workdir: str, model) -> str:
  config = make_tiny_config()
  config.model = model
  config.total_steps = 4
  config.evals = {}
  if model.name.startswith("vae"):
    config.loss = {"bernoulli_nll": 1.0, "kl": 1.0}
    config.data.scale = "unit"
  loop.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
  return _train(str(tmp_path_factory.mktemp("mlp_ae")), model_config("mlp_ae", hidden=(16,), code_dim=3))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  return _train(str(tmp_path_factory.mktemp("vae")), model_config("vae_mlp", hidden=(16,), latent_dim=2))


@pytest.mark.training
def test_the_codec_encodes_and_decodes_as_the_model_does(ae_run):
  run = stage_one.load_run(ae_run)
  codec = latent.LatentCodec.of(run)
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (13, 8, 8, 1)).astype(np.float32)
  codes = codec.encode(x, batch_size=8)  # padded over 8 devices
  out = jax.jit(parallel.with_named_axis(lambda v, x: run.model.apply(v, x)))(run.variables, x)
  assert codes.shape == (13, 3)
  np.testing.assert_allclose(codes, out["code"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(codec.decode(codes, batch_size=8), out["recon"], rtol=0, atol=1e-6)


@pytest.mark.training
def test_the_mixture_is_fitted_on_the_training_codes_once_and_cached(ae_run, monkeypatch):
  codec = latent.LatentCodec.of(stage_one.load_run(ae_run))
  path = latent.mixture_path(codec.run, 2, "diag", 0)
  first = latent.fit_mixture(codec, 2, covariance="diag")
  assert os.path.exists(path) and path.startswith(
    os.path.join(ae_run, "latent_priors", codec.run.fingerprint)
  )
  codes = latent.training_codes(codec)
  assert codes.shape == (96, 3)  # the tiny config's 96 training images
  np.testing.assert_allclose(first.weights @ first.means, codes.mean(0), atol=1e-5)  # EM keeps the mean
  monkeypatch.setattr(latent, "fit_gaussian_mixture", lambda *a, **k: pytest.fail("refitted"))
  again = latent.fit_mixture(codec, 2, covariance="diag")
  np.testing.assert_array_equal(again.means, first.means)
  a = again.sample(np.random.default_rng(3), 5)
  np.testing.assert_array_equal(a, first.sample(np.random.default_rng(3), 5))


@pytest.mark.training
def test_normal_samples_only_a_vae_and_decodes_through_generate(ae_run, vae_run):
  vae = latent.LatentCodec.of(stage_one.load_run(vae_run))
  z = latent.standard_normal(vae, 4, seed=1)
  np.testing.assert_array_equal(z, np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32))
  images = vae.decode(z)
  expected = jax.jit(lambda v, z: vae.run.model.apply(v, z, method="generate"))(vae.run.variables, z)
  np.testing.assert_allclose(images, expected, rtol=0, atol=1e-6)
  with pytest.raises(ConfigError, match="use --prior=mixture"):
    latent.standard_normal(latent.LatentCodec.of(stage_one.load_run(ae_run)), 4, seed=1)


def test_a_run_without_a_continuous_code_is_one_error():
  run = types.SimpleNamespace(config=ml_collections.ConfigDict({"model": {"name": "vqvae"}}), workdir="wd")
  with pytest.raises(ConfigError, match="no continuous code to sample"):
    latent.LatentCodec.of(run)


def _sample_cli(argv):
  from experiments import sample

  flag_values = sample.FLAGS
  try:
    sample.sample(flag_values(["sample", *argv]))
  finally:
    flag_values.unparse_flags()


@pytest.mark.training
def test_the_sampling_command_draws_deterministic_codes_of_either_prior(ae_run, vae_run, tmp_path):
  for run, prior in ((ae_run, "mixture"), (vae_run, "normal")):
    for name in ("a", "b"):
      _sample_cli(
        [
          f"--workdir={run}",
          "--num=6",
          f"--prior={prior}",
          "--components=2",
          f"--out={tmp_path / prior / name}",
        ]
      )
    a, b = (np.load(tmp_path / prior / name / "samples.npz") for name in ("a", "b"))
    np.testing.assert_array_equal(a["images"], b["images"])
    assert a["images"].shape == (6, 8, 8, 1) and (tmp_path / prior / "a" / "samples.png").exists()
  with pytest.raises(ConfigError, match="--prior=normal samples a VAE"):
    _sample_cli([f"--workdir={ae_run}", "--prior=normal", f"--out={tmp_path / 'x'}"])
  with pytest.raises(ConfigError, match="choose how its codes are drawn"):
    _sample_cli([f"--workdir={ae_run}", f"--out={tmp_path / 'x'}"])
  with pytest.raises(ConfigError, match="--top_k is for runs of a prior over codes, not --prior=normal"):
    _sample_cli([f"--workdir={vae_run}", "--prior=normal", "--top_k=3", f"--out={tmp_path / 'x'}"])


@pytest.mark.training
def test_the_sample_quality_evaluator_draws_from_the_mixture_after_training(ae_run, tmp_path):
  """An autoencoder's config.evals.quality (type sample_quality) draws from a mixture over its training codes;
  a prior an autoencoder has not (N(0, I)) is one error before any sample."""
  from ae_jax import evaluators

  config = stage_one.saved_config(ae_run)[1]
  options = dict(num=10, components=2, feature_steps=3, feature_cache=str(tmp_path / "features"))
  config.evals = {"quality": evaluators.section("sample_quality", **options)}
  _, result, _ = loop.evaluate_checkpoint(config, ae_run, names=["quality"])
  assert result.metrics["quality/num_samples"] == 10 and 0 <= result.metrics["quality/precision"] <= 1
  assert np.isfinite(result.metrics["quality/frechet_feature_distance"])
  config.evals.quality.prior = "normal"
  with pytest.raises(ConfigError, match="only a VAE has the prior 'normal'"):
    loop.evaluate_checkpoint(config, ae_run, names=["quality"])


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory):
  """A seq_vae_conv run (a latent per frame) on short synthetic recordings, some padded."""
  from ae_jax.data import data_config, spoken_digit

  def load_split(split, data):
    rng = np.random.default_rng(0 if split == "train" else 1)
    return [
      {"audio": rng.integers(-9000, 9000, 24 + 9 * i).astype(np.int16), "label": i % 10} for i in range(20)
    ]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(spoken_digit, "load_split", load_split)
    config = make_tiny_config()
    config.model = model_config("seq_vae_conv", latent_dim=3)
    config.data = data_config("spoken_digit", num_frames=6, n_fft=16, hop=8)
    config.loss = {"bernoulli_nll": 1.0, "kl": 1.0}
    config.total_steps, config.batch_size, config.eval_batch_size, config.evals = 4, 8, 8, {}
    workdir = str(tmp_path_factory.mktemp("seq_vae"))
    loop.train_and_evaluate(config, workdir)
    yield workdir


@pytest.mark.training
def test_a_latent_per_frame_is_fitted_on_real_frames_and_sampled_frame_by_frame(frames_run, tmp_path):
  """seq_vae_conv's mixture is fitted on the posterior means of the real frames only (those of the model's
  own forward pass with the padding mask); a sample is T frame codes drawn independently, decoded frame by
  frame; N(0, I) draws [num, T, latent_dim]; sample quality, which scores images, is one error."""
  from ae_jax import data
  from ae_jax.data.dataset import stack_examples

  run = stage_one.load_run(frames_run)
  codec = latent.LatentCodec.of(run)
  assert codec.vae and codec.frames and codec.frames_per_example == 6
  dataset = data.get_dataset(run.config.data)
  train = dataset.split("train")
  batch = stack_examples(train, dataset.info, range(len(train)))
  mask = batch["mask"] > 0
  assert 0 < mask.sum() < mask.size  # some recordings are padded
  encode = lambda v, x, m: run.model.apply(v, x, mask=m, method="encode")[0]  # noqa: E731
  means = jax.jit(parallel.with_named_axis(encode))(run.variables, batch["x"], batch["mask"])
  codes = latent.training_codes(codec)
  assert codes.shape == (mask.sum(), 3)
  np.testing.assert_allclose(codes, np.asarray(means)[mask], rtol=0, atol=1e-5)

  mixture = latent.fit_mixture(codec, 2, covariance="diag")
  drawn = latent.mixture_codes(codec, mixture, 5, seed=4)
  expected = mixture.sample(np.random.default_rng(4), 30).astype(np.float32).reshape(5, 6, 3)
  np.testing.assert_array_equal(drawn, expected)
  decoded = codec.decode(drawn)
  assert decoded.shape == (5, 6, 9)
  decode_frames = jax.jit(lambda v, z: run.model.apply(v, z, method="decode_frames"))
  np.testing.assert_allclose(decoded, decode_frames(run.variables, drawn), atol=1e-6)
  assert latent.standard_normal(codec, 2, seed=0).shape == (2, 6, 3)

  for prior in ("mixture", "normal"):
    _sample_cli(
      [
        f"--workdir={frames_run}",
        "--num=4",
        f"--prior={prior}",
        "--components=2",
        f"--out={tmp_path / prior}",
      ]
    )
    saved = np.load(tmp_path / prior / "samples.npz")
    assert saved["images"].shape == (4, 6, 9) and saved["codes"].shape == (4, 6, 3)
    np.testing.assert_allclose(saved["images"], codec.decode(saved["codes"]), rtol=0, atol=1e-6)
    assert (tmp_path / prior / "samples.png").exists()
  with pytest.raises(ConfigError, match=r"shape \[6, 9\], not images"):
    _sample_cli([f"--workdir={frames_run}", "--prior=normal", "--quality", f"--out={tmp_path / 'q'}"])
