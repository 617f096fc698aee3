"""The plug-in registries (ae_jax/core/registry.py): lazy discovery, `module:entry` plug-ins, errors, the
import
graph without cycles, quantizer sections, the listing, and workdirs saved with flat quantizer options."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from ae_jax import data, evaluators, losses, models
from ae_jax.core import registry
from ae_jax.core.errors import ConfigError
from ae_jax.quantizers import QUANTIZERS, quantizer_config
from ae_jax.runner import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(*args: str) -> str:
  """stdout of a fresh interpreter (nothing imported yet) run from the project root."""
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  done = subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0, done.stderr
  return done.stdout


# ----------------------------------------------------------------------------- the import graph


def _module_imports(path: pathlib.Path, name: str, modules: set[str]) -> set[str]:
  """The ae_jax modules `name` imports when it is imported: module-level imports (also inside if/try, not
  inside functions or `if TYPE_CHECKING`), `from X import Y` resolved to module X.Y where it is one."""
  tree = ast.parse(path.read_text())
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  found: set[str] = set()

  def visit(body):
    for node in body:
      if isinstance(node, ast.Import):
        found.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")[: len(package.split(".")) - node.level + 1]
          base = ".".join(parts + ([node.module] if node.module else []))
        for a in node.names:
          found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
      elif isinstance(node, ast.If):
        if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
          visit(node.body)
          visit(node.orelse)
      elif isinstance(node, ast.Try):
        visit(node.body)
        for handler in node.handlers:
          visit(handler.body)
        visit(node.orelse)
        visit(node.finalbody)

  visit(tree.body)
  return {m for m in found if m in modules and m != name}


def test_the_import_graph_of_ae_jax_has_no_cycle():
  """No module of ae_jax imports, at import time, a module that imports it back (directly or through
  others): plug-ins register themselves without package `__init__`s importing them."""
  files = {}
  for path in (ROOT / "ae_jax").rglob("*.py"):
    parts = path.relative_to(ROOT).with_suffix("").parts
    files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  modules = set(files)
  graph = {name: _module_imports(path, name, modules) for name, path in files.items()}
  assert graph["ae_jax.losses.batch_terms"] >= {"ae_jax.losses"}  # the parser sees imports
  state: dict[str, int] = {}

  def cycle_from(node, stack):
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
      if nxt not in state:
        found = cycle_from(nxt, [*stack, nxt])
        if found:
          return found
    state[node] = 2
    return None

  for name in sorted(graph):
    if name not in state:
      cycle = cycle_from(name, [name])
      assert cycle is None, " -> ".join(cycle)


def test_module_names_are_unique_and_shadow_no_standard_module():
  """A module's name says what it holds: no two modules of ae_jax share a name across packages (a package
  and a module in another package included), and none is named like a standard-library module."""
  by_name: dict[str, list[str]] = {}
  for path in (ROOT / "ae_jax").rglob("*.py"):
    rel = path.relative_to(ROOT / "ae_jax").with_suffix("")
    name = rel.parent.name if rel.name == "__init__" else rel.name
    if name:  # ae_jax/__init__.py itself
      by_name.setdefault(name, []).append(str(rel))
  repeated = {name: paths for name, paths in by_name.items() if len(paths) > 1}
  assert not repeated, repeated
  assert not sorted(set(by_name) & sys.stdlib_module_names)


# ----------------------------------------------------------------------------- discovery, listing


def test_a_registry_is_complete_whatever_was_imported_first():
  """`from ae_jax import losses` alone lists the quantizers' and the token models' terms too, and each
  registry its package's plug-ins (fresh interpreter: nothing else imported)."""
  out = _python(
    "-c",
    "from ae_jax import losses; print(sorted(losses.LOSSES)); "
    "from ae_jax.core.registry import MODELS, QUANTIZERS, EVALUATORS; "
    "print(sorted(MODELS)); print(sorted(QUANTIZERS)); print(sorted(EVALUATORS))",
  )
  terms, names, quantizers, types = (eval(line) for line in out.splitlines())
  assert {"lfq_entropy", "code_entropy", "gumbel_kl", "token_xent", "tc", "mmd_imq", "mse", "nmse"} <= set(
    terms
  )
  assert {"vqvae", "mlp_ae", "lstm_encdec_ad", "seq_vae_conv"} <= set(names)
  assert quantizers == ["fsq", "gumbel", "lfq", "rvq", "vq"]
  assert {"losses", "codebook", "anomaly", "likelihood", "reconstructions"} <= set(types)


def test_python_m_ae_jax_registry_lists_every_plugin_with_its_options():
  out = _python("-m", "ae_jax.core.registry")
  lines = out.splitlines()
  assert max(map(len, lines)) <= 110
  headers = [line for line in lines if not line.startswith(" ")]
  assert [h.split(" (")[0] for h in headers] == [
    "datasets",
    "models",
    "evaluators",
    "loss terms",
    "quantizers",
    "discriminators",
  ]
  for kind, reg in registry.Registry.ALL.items():  # ae-jax's own (a test may have added others here)
    own = sum(1 for spec in reg.values() if spec.module.startswith("ae_jax."))
    assert f"{reg.plural} ({own}):" in headers, (kind, headers)
  text = " ".join(out.split())
  assert "rvq: `num_stages` vector quantisers in series on the residuals" in text
  assert "num_stages=4" in text and "levels=(8, 5, 5, 5)" in text
  assert "nmse: mse divided by" in text and "reads batch[data_variance]" in text
  assert "vqvae: VQ-VAE on [B, H, W, C] images" in text and "abilities: quantized" in text
  assert "codebook: code usage over a whole split" in text and "needs a model with quantized" in text


# ----------------------------------------------------------------------------- names and errors


@pytest.mark.parametrize(
  "reg, typo, closest",
  [
    (data.DATASETS, "mnsit", "mnist"),
    (models.MODELS, "conv_a", "conv_ae"),
    (evaluators.EVALUATORS, "codebok", "codebook"),
    (losses.LOSSES, "commitmnt", "commitment"),
    (QUANTIZERS, "rvqq", "rvq"),
  ],
)
def test_unknown_names_suggest_the_closest(reg, typo, closest):
  with pytest.raises(ConfigError, match=f"unknown {reg.where} '{typo}'; did you mean '{closest}'"):
    reg[typo]
  assert typo not in reg and reg.get(typo) is None and closest in reg


def _spec(name, module):
  fn = lambda outputs, batch: batch["x"]  # noqa: E731
  fn.__module__ = module
  return losses.LossSpec(name=name, fn=fn, description="test term")


def test_a_name_taken_by_another_module_is_refused_and_the_same_module_replaces_itself():
  with pytest.raises(ValueError, match="'mse' is already registered by ae_jax.losses.example_terms"):
    losses.LOSSES.register(_spec("mse", "somewhere_else"))
  first, again = _spec("test_twice", "notebook_cell"), _spec("test_twice", "notebook_cell")
  try:
    losses.LOSSES.register(first)
    assert losses.LOSSES.register(again) is again and losses.LOSSES["test_twice"] is again
    with pytest.raises(ValueError, match="already registered by notebook_cell"):
      losses.LOSSES.register(_spec("test_twice", "other_cell"))
  finally:
    losses.LOSSES.unregister("test_twice")
  with pytest.raises(ValueError, match="no ':'"):
    losses.LOSSES.register(_spec("a:b", "x"))


PLUGIN = '''
import flax.linen as nn
from ae_jax import models


@models.register("tmp_ae")
class TmpAE(nn.Module):
  """Dense code of 2 numbers."""

  input_shape: tuple = (4,)
  width: int = 2

  @nn.compact
  def __call__(self, x, *, train=False):
    return {"recon": nn.Dense(x.shape[-1])(nn.Dense(self.width)(x))}
'''


def test_a_module_of_your_own_is_a_plugin_by_module_colon_name(tmp_path, monkeypatch):
  """`my_module:name` imports my_module (outside ae_jax, on sys.path) and resolves the name it registers;
  a module that cannot be imported or registers no such name is one ConfigError."""
  (tmp_path / "tmp_registry_plugin.py").write_text(PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    config = models.model_config("tmp_registry_plugin:tmp_ae", width=3)
    assert dict(config) == {"name": "tmp_registry_plugin:tmp_ae", "width": 3}
    model = models.get_model(config.name, width=3)
    assert (
      type(model).__name__ == "TmpAE" and models.MODELS["tmp_ae"].description == "Dense code of 2 numbers."
    )
    with pytest.raises(
      ConfigError, match="importing 'tmp_registry_plugin' registered no model 'tmp_a'; did you"
    ):
      models.MODELS["tmp_registry_plugin:tmp_a"]
  finally:
    models.MODELS.unregister("tmp_ae")
    sys.modules.pop("tmp_registry_plugin", None)
  with pytest.raises(ConfigError, match="cannot import plug-in module 'no_such_plugin_module'"):
    models.model_config("no_such_plugin_module:x")


# ----------------------------------------------------------------------------- quantizer sections


def test_quantizer_sections_hold_only_their_quantizers_options():
  """Each section's defaults are its quantizer's registered options; a key of another quantizer, or a
  flat quantizer option on the model, is refused naming where it belongs."""
  for name, spec in QUANTIZERS.items():
    assert dict(quantizer_config(name)) == {"name": name, **spec.options}
  assert set(quantizer_config("fsq")) == {"name", "levels"}
  assert models.model_config("vqvae").quantizer.to_dict() == quantizer_config("vq").to_dict()
  with pytest.raises(
    ConfigError,
    match=r"quantizer.num_codes is not an option of quantizer 'fsq'; it is an "
    r"option of quantizer \['gumbel', 'rvq', 'vq'\]",
  ):
    models.get_model("vqvae", quantizer={"name": "fsq", "num_codes": 8})
  with pytest.raises(ConfigError, match="did you mean 'num_stages'"):
    quantizer_config("rvq", num_stage=2)
  with pytest.raises(
    ConfigError,
    match=r"num_codes is not an option of model 'vqvae' but of its quantizer section .*"
    r"set config.model.quantizer.num_codes",
  ):
    models.model_config("vqvae", num_codes=8)
  model = models.get_model("vqvae", quantizer=quantizer_config("rvq", num_stages=3, num_codes=4))
  assert model.codebooks() == (4, 4, 4) and hash(model.quantizer)  # a hashable FrozenDict


# Today's main saved config.model of a VQ-VAE this way: every quantizer's options flat beside the model's.
FLAT_MODEL = {
  "name": "vqvae", "hidden": 8, "res_hidden": 4, "num_res_layers": 1, "quantizer": "rvq", "num_codes": 8,
  "code_dim": 4, "beta": 0.25, "ema": True, "decay": 0.99, "epsilon": 1e-05, "codebook_init": "uniform",
  "dead_code_threshold": 0.0, "fsq_levels": [8, 5, 5, 5], "gradient": "straight_through", "cosine": False,
  "codebook_dim": 0, "num_stages": 2, "shared_codebook": False, "quantizer_dropout": False, "eval_stages": 0,
  "gumbel_temperature": 1.0, "gumbel_temperature_min": 0.0625, "gumbel_anneal_steps": 10000,
  "entropy_temperature": 0.01, "diversity": 1.0, "upsample": "auto", "num_downsamples": 2,
  "channel_mults": [],
}  # fmt: skip


@pytest.mark.training
def test_a_workdir_saved_with_flat_quantizer_options_restores_and_reevaluates(tiny_config, tmp_path):
  """A checkpoint whose saved config has the flat layout (`quantizer: "rvq"` plus every quantizer's
  options) is read back in today's layout: `experiments.evaluate` re-evaluates it to the run's own final
  metrics, and today's config of the same model restores it."""
  from experiments import evaluate

  config = tiny_config
  rvq = quantizer_config("rvq", num_codes=8, code_dim=4, num_stages=2)
  config.model = models.model_config("vqvae", hidden=8, res_hidden=4, num_res_layers=1, quantizer=rvq)
  config.data.shape, config.total_steps, config.checkpoint_every = (8, 8, 3), 2, 2
  config.loss = {"mse": 1.0, "commitment": 1.0}
  summary = loop.train_and_evaluate(config, str(tmp_path))
  saved_path = tmp_path / "checkpoints" / "2" / "config" / "metadata"
  saved = json.loads(saved_path.read_text())
  assert saved["model"]["quantizer"]["name"] == "rvq"
  saved_path.write_text(json.dumps({**saved, "model": FLAT_MODEL}))

  old = evaluate.saved_config(["evaluate", f"--workdir={tmp_path}"])
  assert old.model.quantizer.to_dict() == config.model.quantizer.to_dict()
  as_saved = lambda c: json.loads(json.dumps(c.model.to_dict()))  # noqa: E731 - tuples as lists
  assert "num_codes" not in old.model and as_saved(old) == as_saved(config)
  for cfg in (old, config):  # the saved config read back, and today's config of the same model
    step, result, _ = loop.evaluate_checkpoint(cfg, str(tmp_path))
    assert step == 2 and result.metrics["test/loss"] == pytest.approx(
      summary["metrics"]["test/loss"], rel=1e-6
    )
    assert result.metrics["test/perplexity_stage1"] == pytest.approx(
      summary["metrics"]["test/perplexity_stage1"]
    )


def test_descriptions_are_the_objects_own_first_sentence():
  import flax.linen as nn

  class NoDoc(nn.Module):  # neither nn.Module's docstring nor the dataclass signature
    width: int = 2

  class Doc(nn.Module):
    """Two sentences. The second one.

    Details."""

  assert registry.first_line(NoDoc) == "" and registry.first_line(Doc) == "Two sentences."
  assert (
    losses.LOSSES["kl"].description
    == 'KL(q(z|x) || N(0, I)) from outputs["mean"] and ["logvar"], nats per example.'
  )


def test_a_new_kind_is_one_registry_whose_package_is_discovered(tmp_path, monkeypatch):
  """A kind (e.g. priors) is one `Registry(...)` line: its package's modules (also in subpackages) are
  imported on the first miss and register generic `Spec`s, described by their objects' docstrings."""
  package = tmp_path / "tmp_kind_plugins"
  (package / "sub").mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "sub" / "__init__.py").write_text("")
  code = (
    "from ae_jax.core import registry\n"
    "def {0}():\n  '''The {0} prior. More text.'''\n"
    "spec = registry.Spec(name='{0}', obj={0}, options={{'scale': 1.0}})\n"
    "registry.Registry.ALL['tmp_prior'].register(spec)\n"
  )
  (package / "flat.py").write_text(code.format("flat"))
  (package / "sub" / "deep.py").write_text(code.format("deep"))
  monkeypatch.syspath_prepend(str(tmp_path))
  priors = registry.Registry("tmp_prior", ("tmp_kind_plugins",), "config.prior.name")
  try:
    assert (
      priors["deep"].description == "The deep prior." and priors["deep"].module == "tmp_kind_plugins.sub.deep"
    )
    assert list(priors) == ["deep", "flat"] and priors["flat"].options == {"scale": 1.0}
    with pytest.raises(ConfigError, match="unknown config.prior.name 'flta'; did you mean 'flat'"):
      priors["flta"]
    assert any(line.startswith("tmp_priors (2):") for line in registry.listing())
  finally:
    del registry.Registry.ALL["tmp_prior"]
    for name in [m for m in sys.modules if m.startswith("tmp_kind_plugins")]:
      del sys.modules[name]


def test_setting_a_placeholder_option_leaves_the_registered_default():
  """A placeholder default is an ml_collections FieldReference: each config gets its own, so setting it in
  one config, or building an evaluator from a section that sets it, changes no other config."""
  import ml_collections

  from ae_jax.data import data_config
  from ae_jax.runner.config import default_config

  first = data_config("fashion_mnist")
  first.idx_dir, first.data_dir = "/one", "/two"
  assert data_config("fashion_mnist").idx_dir is None and data_config("fashion_mnist").data_dir is None
  section = evaluators.section("sample_quality")
  section.feature_steps = 5
  assert evaluators.section("sample_quality").feature_steps is None

  seen = []
  evaluators.register(
    evaluators.EvaluatorSpec(
      name="tmp_placeholder_probe",
      build=lambda name, sec, ctx: seen.append(sec.max_examples),
      options={"max_examples": ml_collections.config_dict.placeholder(int)},
      description="a probe",
    )
  )
  try:
    config = default_config()
    config.evals = {"probe": evaluators.section("tmp_placeholder_probe", max_examples=7)}
    evaluators.build(config, None)
    assert seen == [7] and evaluators.section("tmp_placeholder_probe").max_examples is None
  finally:
    evaluators.EVALUATORS.unregister("tmp_placeholder_probe")
