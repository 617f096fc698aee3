"""docs/extending.md's examples run: each file is written into a temporary folder on sys.path, each config
block runs on a small config, and the plug-ins are resolved through it (`module:name`) and trained or
evaluated, so the documentation cannot rot."""

import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ae_jax import data, models
from ae_jax.core import parallel, registry
from ae_jax.core.errors import ConfigError
from ae_jax.data.dataset import stack_examples
from ae_jax.runner import loop
from ae_jax.training import outputs, train

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"
MODULES = ("my_ramps", "my_models", "my_evals", "my_losses", "my_quantizers", "my_priors")


def _blocks() -> tuple[dict[str, str], list[str]]:
  """The files ({name: code}) and the config blocks of the document, in order."""
  text = DOC.read_text()
  files = dict(re.findall(r"```python file=(\S+)\n(.*?)```", text, re.S))
  configs = re.findall(r"```python config\n(.*?)```", text, re.S)
  return files, configs


@pytest.fixture
def plugins(tmp_path, monkeypatch):
  """The document's files in a folder on sys.path; their registrations are undone afterwards."""
  files, configs = _blocks()
  assert sorted(files) == sorted(f"{m}.py" for m in MODULES) and len(configs) == len(MODULES)
  for name, code in files.items():
    (tmp_path / name).write_text(code)
  monkeypatch.syspath_prepend(str(tmp_path))
  yield dict(zip(MODULES, configs, strict=True))
  for reg in registry.Registry.ALL.values():
    for name, spec in list(reg._specs.items()):
      if spec.module in MODULES:
        reg.unregister(name)
  for module in MODULES:
    sys.modules.pop(module, None)


def _run(block: str, config) -> None:
  exec(compile(block, str(DOC), "exec"), {"config": config})


@pytest.mark.training
def test_the_dataset_model_evaluator_and_loss_examples_train_together(plugins, tiny_config, tmp_path):
  """The ramps dataset, the linear model, the `within` evaluator and the smoothness term, each named
  `module:name` by its config lines, train and evaluate; each value checks against a direct computation."""
  config = tiny_config
  for module in ("my_ramps", "my_models", "my_evals", "my_losses"):
    _run(plugins[module], config)
  assert data.get_spec("my_ramps:ramps").class_names == ("falling", "rising")
  assert models.MODELS["my_models:linear_ae"].options == {"code_dim": 2}
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
  dataset, state, model = summary["dataset"], summary["state"], summary["model"]
  assert dataset.info.shape == (16,) and type(model).__name__ == "LinearAE" and model.code_dim == 3
  test = dataset.split("test")
  x = stack_examples(test, dataset.info, range(len(test)))["x"]
  recon = np.asarray(outputs.reconstruct(model, state, x)["recon"])
  err = np.abs(recon - x).mean(axis=1)
  np.testing.assert_allclose(summary["metrics"]["close/within"], np.mean(err < 0.5))
  smooth = np.mean(np.square(np.diff(recon, axis=-1)), axis=1).mean()
  np.testing.assert_allclose(summary["metrics"]["test/my_losses:smoothness"], smooth, rtol=1e-4)
  # the saved config names the plug-ins, so a fresh evaluation of the checkpoint finds them again
  step, result, _ = loop.evaluate_checkpoint(config, str(tmp_path / "run"), names=["close"])
  assert step == config.total_steps and result.metrics["close/within"] == summary["metrics"]["close/within"]


def test_the_quantizer_example_runs_inside_the_vqvae(plugins, tiny_config):
  """The binary quantizer as config.model.quantizer: 6 channels of 0/1, 2^6 codes; another quantizer's
  option is refused naming the quantizers that have it."""
  config = tiny_config
  config.data.shape = (8, 8, 3)
  _run(plugins["my_quantizers"], config)
  assert dict(config.model.quantizer) == {"name": "my_quantizers:binary", "bits": 6, "beta": 0.25}
  model, objective, _, _ = train.build(config, (8, 8, 3))
  assert model.codebooks() == (64,)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
  state = train.create_train_state(model, optax.sgd(0.1), x[:1], 0)
  run = parallel.with_named_axis(lambda s, x: model.apply({"params": s.params, **s.model_state}, x))
  out = jax.jit(run)(state, x)
  assert out["code"].shape == (4, 2, 2, 6) and set(np.unique(out["code"])) <= {0.0, 1.0}
  assert int(out["indices"].max()) < 64 and 1.0 <= float(out["metrics"]["perplexity"]) <= 64.0
  total, terms = objective(out, {"x": x}, 0)
  np.testing.assert_allclose(total, terms["mse"] + terms["commitment"], rtol=1e-6)
  config.model.quantizer.num_codes = 8
  with pytest.raises(ConfigError, match=r"num_codes is not an option of quantizer 'my_quantizers:binary'"):
    train.build(config, (8, 8, 3))


@pytest.mark.training
def test_the_prior_example_trains_on_a_stage_ones_codes_scores_and_samples(plugins, tmp_path):
  """The per-position prior, configured by its config lines over a tiny VQ-VAE's codes: its test NLL
  (the prior_likelihood evaluator) is -sum_t log softmax(w_t)[x_t] computed from its parameters, and the
  sampler draws from it."""
  from ae_jax.generation import generate, stage_one
  from tests.conftest import train_tiny_vqvae

  stage = str(tmp_path / "stage_one")
  train_tiny_vqvae(stage, 4)
  namespace = {"STAGE_ONE": stage}
  exec(compile(plugins["my_priors"], str(DOC), "exec"), namespace)
  config = namespace["config"]
  config.batch_size = config.eval_batch_size = 16
  config.total_steps, config.checkpoint_every, config.log_every = 20, 20, 10
  config.evals.test.every = 0
  summary = loop.train_and_evaluate(config, str(tmp_path / "prior"))
  assert config.loss.to_dict() == {"code_nll": 1.0}  # the model's objective
  table = np.asarray(summary["state"].params["logits"], np.float64)
  log_p = table - np.log(np.exp(table).sum(-1, keepdims=True))
  test = summary["dataset"].split("test")
  codes = np.stack([test[i]["tokens"] for i in range(len(test))])
  nll = -log_p[np.arange(codes.shape[1]), codes].sum(-1).mean()
  assert summary["metrics"]["likelihood/nll"] == pytest.approx(nll, rel=1e-5)
  samples = generate.sample_tokens(stage_one.load_run(str(tmp_path / "prior")), 6, seed=0, per_device=1)
  assert samples.shape == (6, 4) and samples.min() >= 0 and samples.max() < 16
