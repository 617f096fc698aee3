"""Every registered model implements exactly the abilities its registry entry declares, and the
inspector reports a quantized model's real bottleneck in bits."""

import inspect as pyinspect
import math

import pytest

from ae_jax import models
from ae_jax.models.interface import ABILITIES
from ae_jax.runner.bottleneck import format_report, inspect_model


def _implements(cls, ability) -> bool:
  if ability in ("masked", "conditional"):
    keyword = {"masked": "mask", "conditional": "labels"}[ability]
    if keyword not in pyinspect.signature(cls.__call__).parameters:
      return False
    if ability == "masked":
      return True
  instance = cls.__new__(cls)  # the Protocols check for attributes and methods, so no setup is needed
  return isinstance(instance, ABILITIES[ability])


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_registry_abilities_match_the_classes(name):
  spec = models.MODELS[name]
  for ability in ABILITIES:
    assert _implements(spec.cls, ability) == (ability in spec.abilities), (name, ability)
  assert models.abilities(name) == spec.abilities == models.abilities(models.get_model(name))


def test_unknown_abilities_are_refused_and_stand_ins_have_none():
  with pytest.raises(ValueError, match="unknown abilities"):
    models.ModelSpec(name="flier", cls=models.MODELS["mlp_ae"].cls, abilities=frozenset({"flies"}))
  assert models.abilities(object()) == frozenset()


def test_a_code_prior_must_say_what_its_evaluation_measures():
  prior = models.MODELS["ar_prior"].cls
  bad = type("BitsPrior", (prior,), {"score": "bits"})
  with pytest.raises(ValueError, match="BitsPrior.score must be one of \\('nll', 'masked_xent'\\)"):
    models.ModelSpec(name="bits_prior", cls=bad, abilities=frozenset({"code_prior"}))
  assert models.with_ability("code_prior") == ["ar_prior", "maskgit_prior", "pixelcnn_prior"]


@pytest.mark.parametrize(
  "options, codebooks",
  [(dict(quantizer={"name": "vq", "num_codes": 256}), (256,)), (dict(quantizer="fsq"), (1000,))],
)
def test_inspector_counts_tokens_and_bits_of_quantized_models(options, codebooks):
  model = models.get_model("vqvae", input_shape=(32, 32, 3), hidden=16, res_hidden=8, **options)
  report = inspect_model(model, (32, 32, 3), bits_per_value=8)
  assert report.latent_grid == (8, 8) and report.codebooks == codebooks
  assert report.bits == pytest.approx(64 * math.log2(codebooks[0]))
  assert report.input_bits == 32 * 32 * 3 * 8
  text = format_report(report)
  assert "latent grid:       8 x 8 = 64 positions" in text and "bits ratio:" in text
  assert "can learn the identity" not in text  # a quantized code is no float copy of the input


def test_inspector_shows_the_latent_grid_of_a_larger_image_model():
  model = models.get_model("vqvae", input_shape=(64, 64, 3), hidden=16, res_hidden=8, num_downsamples=3)
  report = inspect_model(model, (64, 64, 3))
  assert report.latent_grid == (8, 8) and report.input_bits is None
  assert "bits per example: 64 x (log2 512) = 576" in format_report(report)
