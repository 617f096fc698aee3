"""The README and docs/ stay what a reader needs: a README under 400 lines that starts with its two commands,
no lab-notebook voice, every config file a command names existing, the contents list's links resolving,
and the plug-in flag forms they show parsing through the project's config loader."""

import json
import pathlib
import re
import sys
import textwrap

import pytest
from absl import flags

from ae_jax.core import registry
from ae_jax.models import interface

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def _texts() -> dict[str, str]:
  """{relative path: text} of the README, every docs/*.md page and the notebook's markdown and code."""
  texts = {str(p.relative_to(ROOT)): p.read_text() for p in [README, *PAGES]}
  cells = json.loads(NOTEBOOK.read_text())["cells"]
  texts["docs/tutorial.ipynb"] = "\n".join("".join(c["source"]) for c in cells)
  return texts


# Lab-notebook voice: who measured what, where and when, instead of what the reader gets.
DIARY = [
  r"\bthis session",
  r"\bearlier sessions?\b",
  r"\bprevious sessions?\b",
  r"\b(?:an |the )?earlier machine",
  r"\bthe machine before\b",
  r"\bthe machine of\b",
  r"\bon this machine\b",
  r"\bthis machine's\b",
  r"\bnot (?:been )?rerun\b",
  r"\bwere rerun\b",
  r"\brerun on \d{4}-",
  r"\bmeasured before\b",
  r"\bwas lent\b|\blent to this work\b",
  r"\bthis work\b",
  r"\btoday's code\b",
]
# A commit hash: 7 to 40 hex digits with a letter and a digit, standing alone (not inside a path or a name).
COMMIT = re.compile(r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/.-])")


def test_the_readme_is_short_and_starts_with_its_two_commands():
  lines = README.read_text().splitlines()
  assert len(lines) < 400, f"README.md has {len(lines)} lines"
  first_block = README.read_text().split("```")[1]
  assert "make demo" in first_block and "make test" in first_block
  assert any(line.startswith("make test:") for line in lines), "the README states the suite's time"


@pytest.mark.parametrize("name", sorted(_texts()))
def test_no_lab_notebook_voice(name):
  text = _texts()[name]
  found = [m.group(0) for pattern in DIARY for m in re.finditer(pattern, text, re.IGNORECASE)]
  found += [f"commit hash? {m.group(0)}" for m in COMMIT.finditer(text)]
  assert not found, f"{name}: {found}"


def _repository_files() -> set[str]:
  skip = {".git", ".venv", "runs", "node_modules", "__pycache__"}
  return {p.name for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)}


def test_every_config_file_a_command_names_exists():
  configs = {p.name for p in (ROOT / "experiments" / "configs").glob("*.py")}
  files = _repository_files()
  missing = []
  for name, text in _texts().items():
    for m in re.finditer(r"experiments/configs/(\w+\.py)", text):
      if m.group(1) not in configs:
        missing.append(f"{name}: experiments/configs/{m.group(1)}")
    # shorthand in code spans and commands: `vqvae_cifar10.py:quantizer=fsq`, `prior_ar.py:...` (not a
    # test's `test_x.py::name`)
    for m in re.finditer(r"(?<![\w/.-])([a-z][a-z0-9_]*\.py)(:(?!:)|[`\s,)])", text):
      short, after = m.groups()
      if short.startswith("my_") or (short in configs if after == ":" else short in files):
        continue  # FILE.py:ARG is a config; another file may be any of the repository's
      missing.append(f"{name}: {short}")
  assert not missing, missing


def _slug(heading: str) -> str:
  """GitHub's anchor of a markdown heading."""
  text = re.sub(r"[`*_]", "", heading.strip().lower())
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  return {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)}


def _links(path: pathlib.Path) -> list[str]:
  text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # links, not code
  return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
  broken = []
  for link in _links(page):
    if re.match(r"^[a-z]+:", link):
      continue  # http(s), mailto
    target, _, anchor = link.partition("#")
    path = (page.parent / target) if target else page
    if not path.exists():
      broken.append(link)
    elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
      broken.append(f"{link} (no heading with that anchor)")
  assert not broken, f"{page.name}: {broken}"


def test_the_contents_list_links_every_docs_page():
  text = README.read_text()
  contents = text[text.index("## Documentation") :]
  contents = contents[: contents.index("\n## ", 1)] if "\n## " in contents[1:] else contents
  linked = set(re.findall(r"\]\((docs/[\w.-]+)\)", contents))
  assert {f"docs/{p.name}" for p in PAGES} <= linked, sorted({f"docs/{p.name}" for p in PAGES} - linked)
  assert "docs/tutorial.ipynb" in linked


def test_extending_lists_every_model_ability():
  text = (ROOT / "docs" / "extending.md").read_text()
  section = text[text.index("## Model abilities") :]
  listed = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
  assert listed == set(interface.ABILITIES), sorted(set(interface.ABILITIES) ^ listed)


# ----------------------------------------------------------------------------- the plug-in flag forms

LOSS_FLAG = re.compile(r"--config\.loss(?:_schedules)?\.(\w+):(\w+)=([\w.]+)")
MODEL_FLAG = re.compile(r"--config\.model\.name=(\w+):(\w+)")


def _shown_flags() -> tuple[list[str], dict[str, dict[str, set[str]]]]:
  """Every plug-in flag the README and docs show, and {module: {"losses": names, "models": names}}."""
  shown, modules = [], {}
  for text in _texts().values():
    for m in LOSS_FLAG.finditer(text):
      shown.append(m.group(0))
      modules.setdefault(m.group(1), {"losses": set(), "models": set()})["losses"].add(m.group(2))
    for m in MODEL_FLAG.finditer(text):
      shown.append(m.group(0))
      modules.setdefault(m.group(1), {"losses": set(), "models": set()})["models"].add(m.group(2))
  return sorted(set(shown)), modules


def _plugin_source(losses: set[str], models: set[str]) -> str:
  lines = ["import flax.linen as nn", "import jax.numpy as jnp", "from ae_jax import losses, models", ""]
  for name in sorted(losses):
    lines += [
      f"@losses.register({name!r})",
      f"def {name}(outputs, batch):",
      '  """Mean |recon| per example."""',
      "  r = outputs['recon']",
      "  return jnp.abs(r).reshape(r.shape[0], -1).mean(axis=1)",
      "",
    ]
  for name in sorted(models):
    lines += [
      f"@models.register({name!r})",
      f"class Model_{name}(nn.Module):",
      '  """A linear autoencoder."""',
      "  input_shape: tuple = (28, 28, 1)",
      "  code_dim: int = 2",
      "",
      "  @nn.compact",
      "  def __call__(self, x, *, train: bool = False):",
      "    code = nn.Dense(self.code_dim)(x.reshape(x.shape[0], -1))",
      "    return {'code': code, 'recon': nn.Dense(x[0].size)(code).reshape(x.shape)}",
      "",
    ]
  return "\n".join(lines)


@pytest.fixture
def shown_plugins(tmp_path, monkeypatch):
  """A module for each plug-in module the docs' flags name, registering the terms and models they name."""
  shown, modules = _shown_flags()
  for module, names in modules.items():
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(_plugin_source(names["losses"], names["models"])))
  monkeypatch.syspath_prepend(str(tmp_path))
  yield shown
  for reg in registry.Registry.ALL.values():
    for name, spec in list(reg._specs.items()):
      if spec.module in modules:
        reg.unregister(name)
  for module in modules:
    sys.modules.pop(module, None)


def test_the_plugin_flag_forms_the_docs_show_parse(shown_plugins):
  from experiments import main

  assert "--config.loss.my_module:my_term=0.01" in shown_plugins
  assert "--config.model.name=my_module:my_model" in shown_plugins
  for flag in shown_plugins:
    argv = ["main", "--config", "experiments/configs/conv_ae_fashion_mnist.py", "--workdir", "/unused", flag]
    if flag.startswith("--config.loss_schedules."):  # a warm-up needs its term in config.loss
      argv.append(flag.replace("loss_schedules", "loss", 1).split("=")[0] + "=1.0")
    flag_values = flags.FlagValues()
    main.define_flags(flag_values, argv)
    main.parse_command_line(argv, flag_values)
    config = flag_values.config
    if m := LOSS_FLAG.fullmatch(flag):
      section = config.loss_schedules if flag.startswith("--config.loss_schedules") else config.loss
      assert section[f"{m.group(1)}:{m.group(2)}"] == float(m.group(3)), flag
    else:
      m = MODEL_FLAG.fullmatch(flag)
      assert config.model.to_dict() == {"name": f"{m.group(1)}:{m.group(2)}", "code_dim": 2}, flag
