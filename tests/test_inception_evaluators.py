"""What the Inception-space measures are built on, beside the network (tests/test_inception.py): the cached
reference features (ae_jax.metrics.inception_reference) are used only under their fingerprint; the
commands take --inception_weights and refuse weights that are not there with one line, before any compute;
the quality report names each space's distance for what it is. Nothing here needs the real weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_config

from ae_jax.core.errors import ConfigError
from ae_jax.evaluators import inception_features
from ae_jax.metrics import inception_reference, inception_weights
from ae_jax.metrics.sample_metrics import feature_statistics

# ----------------------------------------------------------------------------- the reference cache


class _Counting:
  """A stand-in for the network: features [N, 4] from the images, counting its calls."""

  def __init__(self) -> None:
    self.calls = 0

  def __call__(self, unit: np.ndarray) -> np.ndarray:
    self.calls += 1
    flat = unit.reshape(len(unit), -1)
    return np.stack([flat.mean(1), flat.std(1), flat[:, 0], flat[:, -1]], axis=1)


def test_the_reference_cache_is_used_only_under_its_fingerprint(tmp_path):
  """Computed once, then read (the same statistics); one changed pixel, another protocol (weights) or
  another N is computed again into its own file; a file whose stored fingerprint is not the one computed
  now (its name matching) is never used."""
  images = np.random.default_rng(0).uniform(0, 1, (12, 4, 4, 3)).astype(np.float32)
  protocol = inception_reference.protocol_of("a" * 64, len(images))
  net = _Counting()

  def ref(x, p=protocol):
    return inception_reference.reference("synthetic", "test", x, p, net, cache_dir=tmp_path)

  first = ref(images)
  assert net.calls == 1 and not first.cached
  mean, cov = feature_statistics(net(images))
  np.testing.assert_allclose(first.mean, mean, rtol=1e-12)
  np.testing.assert_allclose(first.cov, cov, rtol=1e-12)
  net.calls = 0
  again = ref(images)
  assert net.calls == 0 and again.cached and again.fingerprint == first.fingerprint
  np.testing.assert_array_equal(again.cov, first.cov)
  np.testing.assert_array_equal(again.features, first.features)

  changed = images.copy()
  changed[3, 1, 2, 0] += 1 / 255
  other_weights = inception_reference.protocol_of("b" * 64, len(images))
  other_n = inception_reference.protocol_of("a" * 64, len(images) - 1)
  for x, p in ((changed, protocol), (images, other_weights), (images[:-1], other_n)):
    result = ref(x, p)
    assert net.calls == 1 and not result.cached and result.fingerprint != first.fingerprint
    net.calls = 0
  assert len(list(tmp_path.glob("synthetic-test-n*.npz"))) == 4

  path = inception_reference.cache_path(tmp_path, "synthetic", "test", len(images), first.fingerprint)
  with np.load(path) as f:
    stored = dict(f)
  np.savez(path, **{**stored, "fingerprint": np.str_("0" * 64), "mean": stored["mean"] + 1.0})
  tampered = ref(images)
  assert net.calls == 1 and not tampered.cached
  np.testing.assert_allclose(tampered.mean, mean, rtol=1e-12)


def test_the_fingerprint_covers_the_protocol_record():
  images = np.zeros((2, 3, 3, 1), np.float32)
  base = inception_reference.protocol_of("a" * 64, 2)
  assert base["protocol"].startswith("pytorch-fid: bilinear resize to 299x299")
  keys = {inception_reference.fingerprint(images, {**base, key: "x"}) for key in base}
  assert len(keys | {inception_reference.fingerprint(images, base)}) == len(base) + 1


# ----------------------------------------------------------------------------- weights and commands


def _no_weights_anywhere(monkeypatch, tmp_path) -> None:
  monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

  def offline(*args, **kwargs):
    raise ConfigError(f"FID Inception: offline (test); put it at {tmp_path / 'cache'}")

  monkeypatch.setattr(inception_weights, "download", offline)


def test_quality_weights_asked_for_must_load_and_absent_ones_leave_a_note(monkeypatch, tmp_path):
  _no_weights_anywhere(monkeypatch, tmp_path)
  variables, note = inception_features.weights_for_quality(None, 100)
  assert variables is None and note.startswith("Inception space not measured: ") and "\n" not in note
  with pytest.raises(ConfigError, match="the given path .*nowhere.pth is not a file"):
    inception_features.weights_for_quality(str(tmp_path / "nowhere.pth"), 100)
  monkeypatch.setenv(inception_weights.ENV_VAR, str(tmp_path / "elsewhere.pth"))
  with pytest.raises(ConfigError, match=r"\$AE_JAX_INCEPTION .*elsewhere.pth is not a file"):
    inception_features.weights_for_quality(None, 100)


def test_the_report_names_each_space_for_what_it_is():
  feature = {"frechet_feature_distance": 1.5, "floor_frechet_feature_distance": 0.1, "precision": 0.8}
  feature["recall"] = 0.6
  inception = {"fid": 12.0, "fid_floor": 2.0, "precision": 0.7, "recall": 0.5}
  inception.update(inception_score=5.25, inception_score_std=0.125)
  header, inception_row, feature_row = inception_features.report_lines(inception, feature)
  assert inception_row.split()[:3] == ["Inception", "FID", "12"]
  assert "5.250 +- 0.125" in inception_row and "0.700" in inception_row
  assert feature_row.startswith("feature network") and "Fréchet distance (feature network)" in feature_row
  assert "FID" not in feature_row and "floor" in header
  assert len(inception_features.report_lines(None, feature)) == 2


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
  from ae_jax.runner import loop

  config = make_tiny_config()
  config.total_steps = 2
  config.evals = {}
  workdir = str(tmp_path_factory.mktemp("ae"))
  loop.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.training
def test_evaluate_gives_inception_weights_to_the_inception_sections(ae_run, monkeypatch, tmp_path):
  """--inception_weights sets the weights option of the fid/rfid/inception_score sections; a path that is
  not there is one ConfigError when the evaluator is built (before any compute); the flag without such a
  section is refused."""
  from ae_jax.runner import loop
  from experiments import evaluate

  _no_weights_anywhere(monkeypatch, tmp_path)
  missing = str(tmp_path / "nowhere.pth")
  argv = [
    "evaluate",
    f"--workdir={ae_run}",
    "--add=fid:fid",
    "--add",
    "rfid:rfid",
    f"--inception_weights={missing}",
  ]
  config = evaluate.saved_config(argv)
  assert config.evals.fid.weights == config.evals.rfid.weights == missing
  with pytest.raises(ConfigError) as e:
    loop.evaluate_checkpoint(config, ae_run, names=["rfid"])
  assert "\n" not in str(e.value) and "nowhere.pth is not a file" in str(e.value)
  assert "$AE_JAX_INCEPTION" in str(e.value)
  with pytest.raises(ConfigError, match="no fid/rfid/inception_score evaluator"):
    evaluate.saved_config(["evaluate", f"--workdir={ae_run}", f"--inception_weights={missing}"])


@pytest.mark.training
def test_sample_refuses_inception_weights_that_are_not_there_before_sampling(ae_run, monkeypatch, tmp_path):
  from experiments import sample

  _no_weights_anywhere(monkeypatch, tmp_path)
  out = tmp_path / "out"

  def run(*args: str) -> None:
    sample.FLAGS(["sample", f"--workdir={ae_run}", "--prior=mixture", "--num=4", f"--out={out}", *args])
    try:
      sample.sample(["sample"])
    finally:
      sample.FLAGS.unparse_flags()

  with pytest.raises(ConfigError, match="nowhere.pth is not a file"):
    run("--quality", f"--inception_weights={tmp_path / 'nowhere.pth'}")
  assert not (out / "samples.npz").exists()
  with pytest.raises(ConfigError, match="add --quality"):
    run(f"--inception_weights={tmp_path / 'nowhere.pth'}")


def test_too_few_samples_are_refused_when_the_evaluator_is_built(tiny_config):
  """Before any weights are looked for or images drawn: fid needs num >= max(2, k + 1, splits),
  inception_score splits <= num."""
  from ae_jax import evaluators
  from ae_jax.runner import experiment

  ctx = experiment.setup(tiny_config).context()
  with pytest.raises(ConfigError, match=r"num >= max\(2, k \+ 1, splits\) = 10 samples, got k=3, splits=10"):
    evaluators.EVALUATORS["fid"].build("fid", evaluators.section("fid", num=5), ctx)
  with pytest.raises(ConfigError, match="splits <= num"):
    evaluators.EVALUATORS["inception_score"].build("is", evaluators.section("inception_score", num=5), ctx)
