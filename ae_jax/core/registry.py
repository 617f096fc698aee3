"""Plug-in registries: one `Registry` per kind (dataset, model, evaluator, loss term, quantizer).

Every plug-in is a typed spec entry (`Spec` or a kind's subclass: `DatasetSpec`, `ModelSpec`,
`EvaluatorSpec`, `LossSpec`, `QuantizerSpec`) holding its name, the object (a loader, a module class, a
function), a one-line description (the object's docstring unless given), its options with defaults and the
kind's own metadata (a model's abilities, what an evaluator needs, the dataset constants a loss term reads).
A module registers its plug-ins next to their definitions, when it is imported:

    @models.register("my_ae", abilities=("generative",))
    class MyAE(nn.Module): ...

Lookups need no import list: a name not registered yet (and any listing) first imports every module of
the kind's packages once (`discover`), so the registry is complete whatever was imported first. A name may
also be `some.module:entry`: the module is imported first (it must register `entry`), so a file of your own
outside ae_jax (on sys.path, e.g. PYTHONPATH=.) is a plug-in without editing ae-jax:

    config.model = models.model_config("my_plugins:my_ae")   # my_plugins.py registers "my_ae"

An unknown name raises ConfigError with the closest registered one. Registering a taken name from another
module raises ValueError; the same module registering it again (a reload, a notebook cell) replaces it.

A new kind is one line below (its packages, and where its name is set in a config); its spec class is
`Spec` or a subclass. `python -m ae_jax.core.registry` lists every registered plug-in by kind.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ae_jax.core.errors import ConfigError, did_you_mean


def first_line(obj: Any) -> str:
  """The first sentence of `obj`'s own docstring, on one line ("" without one: neither a base class's nor
  the signature a dataclass puts there)."""
  doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
  if not isinstance(doc, str) or not doc.strip() or doc.startswith(f"{getattr(obj, '__name__', '')}("):
    return ""
  doc = inspect.cleandoc(doc)
  paragraph = " ".join(doc.strip().split("\n\n")[0].split())
  sentence = paragraph.split(". ")[0]
  return sentence if sentence.endswith(".") or sentence == paragraph else sentence + "."


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
  """A registered plug-in: its name, one-line description and options with defaults.

  Subclasses name the registered object by overriding `target` (the field holding the loader, class or
  function); the module that defines it owns the name. `details()` lists kind-specific metadata lines.
  """

  name: str
  description: str = ""
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  obj: Any = None

  def __post_init__(self) -> None:
    if not self.description:
      object.__setattr__(self, "description", first_line(self.target))

  @property
  def target(self) -> Any:
    """The registered object (a loader, a module class, a function)."""
    return self.obj

  @property
  def module(self) -> str:
    """The module that defines the registered object (it owns the name)."""
    return getattr(self.target, "__module__", "") or ""

  def details(self) -> list[str]:
    """Kind-specific metadata, one short `key: value` string each (for listings)."""
    return []

  def defaults(self) -> dict[str, Any]:
    """The options with their defaults, copied for a new config section: a placeholder default is an
    ml_collections FieldReference, which setting the option in one config would otherwise change for
    every config built from this entry."""
    return copy.deepcopy(dict(self.options))


S = TypeVar("S", bound=Spec)


class Registry(Generic[S]):
  """Named specs of one plug-in kind, discovered lazily from the modules of `packages`.

  Dict-like: `name in registry`, `registry[name]` (ConfigError for an unknown name), iteration over the
  names (sorted), `get(name, default)`, `items()`, `values()`. `register(spec)` adds one.
  """

  ALL: dict[str, Registry] = {}  # kind -> registry, in declaration order

  def __init__(self, kind: str, packages: Sequence[str], where: str, plural: str = "") -> None:
    self.kind, self.packages, self.where = kind, tuple(packages), where
    self.plural = plural or kind + "s"
    self._specs: dict[str, S] = {}
    self._discovered = False
    Registry.ALL[kind] = self

  # ----------------------------------------------------------------------------- registering

  def register(self, spec: S) -> S:
    """Adds `spec`; the same module registering its name again replaces it, another module is refused."""
    if ":" in spec.name or not spec.name:
      raise ValueError(f"{self.kind} name '{spec.name}' must be non-empty and contain no ':'")
    old = self._specs.get(spec.name)
    if old is not None and old.module != spec.module:
      raise ValueError(
        f"{self.kind} '{spec.name}' is already registered by {old.module}; pick another name in {spec.module}"
      )
    self._specs[spec.name] = spec
    return spec

  def unregister(self, name: str) -> None:
    """Removes `name` if registered (tests, notebooks)."""
    self._specs.pop(name, None)

  def __setitem__(self, name: str, spec: S) -> None:  # so pytest's monkeypatch.setitem works
    if spec.name != name:
      raise ValueError(f"{self.kind} spec '{spec.name}' stored under another name '{name}'")
    self.register(spec)

  def __delitem__(self, name: str) -> None:
    if name not in self._specs:
      raise KeyError(name)
    self.unregister(name)

  # ----------------------------------------------------------------------------- discovery

  def discover(self) -> None:
    """Imports every module of the kind's packages (once), so each registers its plug-ins; modules whose
    name starts with "_" (e.g. a `__main__`) are skipped."""
    if self._discovered:
      return
    self._discovered = True  # set first: a module imported below may look names up
    for package in self.packages:
      pkg = importlib.import_module(package)
      for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
          importlib.import_module(info.name)

  def _import_plugin(self, name: str, where: str) -> str:
    """For `module:entry`, imports the module and returns `entry` (which it must register)."""
    module, _, entry = name.partition(":")
    if not module or not entry:
      raise ConfigError(f"{where}='{name}': write a plug-in of your own as 'module.path:{self.kind}_name'")
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
        raise  # the plug-in itself imports something missing: a bug in it, keep the traceback
      raise ConfigError(
        f"{where}='{name}': cannot import plug-in module '{module}' ({e}); put the folder holding it on "
        f"sys.path (e.g. PYTHONPATH=DIR; sys.path: {sys.path[:3]}...)"
      ) from None
    if entry not in self._specs:
      mine = sorted(n for n, s in self._specs.items() if s.module == module)
      raise ConfigError(
        f"{where}='{name}': importing '{module}' registered no {self.kind} '{entry}'; "
        f"{did_you_mean(entry, mine)}it registers {mine}"
      )
    return entry

  # ----------------------------------------------------------------------------- lookups

  def lookup(self, name: str, where: str | None = None) -> S:
    """The spec of `name` (or `module:entry`); ConfigError naming the closest registered one."""
    where = where or self.where
    if not isinstance(name, str):
      raise ConfigError(f"{where} must be a {self.kind} name (a string), got {name!r}")
    if ":" in name:
      return self._specs[self._import_plugin(name, where)]
    if name not in self._specs:
      self.discover()
    if name not in self._specs:
      raise ConfigError(
        f"unknown {where} '{name}'; {did_you_mean(name, self._specs)}registered {self.plural}: "
        f"{sorted(self._specs)} (or 'your.module:name' for a plug-in of your own)"
      )
    return self._specs[name]

  def __getitem__(self, name: str) -> S:
    return self.lookup(name)

  def get(self, name: str, default: Any = None) -> S | Any:
    try:
      return self.lookup(name)
    except ConfigError:
      return default

  def __contains__(self, name: object) -> bool:
    return isinstance(name, str) and self.get(name) is not None

  def __iter__(self) -> Iterator[str]:
    self.discover()
    return iter(sorted(self._specs))

  def __len__(self) -> int:
    self.discover()
    return len(self._specs)

  def keys(self) -> list[str]:
    return list(self)

  def values(self) -> list[S]:
    return [self._specs[n] for n in self]

  def items(self) -> list[tuple[str, S]]:
    return [(n, self._specs[n]) for n in self]

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}, {len(self._specs)} registered, packages={list(self.packages)})"

  # ----------------------------------------------------------------------------- option sections

  def check_options(self, name: str, keys: Sequence[str], where: str, valid: Sequence[str] = ()) -> S:
    """The spec of `name`, after checking that every key is one of its options (or of `valid`); an option
    of another entry is named as such, else the closest valid one."""
    spec = self.lookup(name, f"{where}.name")
    allowed = {*spec.options, *valid}
    for key in keys:
      if key in allowed:
        continue
      others = self.owners(key)
      hint = (
        f"it is an option of {self.kind} {others}: a section holds the options of its own {self.kind} "
        f"only (build a new one when switching {self.plural})"
        if others
        else f"{did_you_mean(key, allowed)}{self.kind} '{name}' has options {sorted(allowed)}"
      )
      raise ConfigError(f"{where}.{key} is not an option of {self.kind} '{name}'; {hint}")
    return spec

  def section(self, value: Any, where: str, **overrides: Any) -> dict[str, Any]:
    """A nested plug-in section {"name": ..., every option of that entry}: `value` is an entry's name or
    a mapping with its "name" and some options, then `overrides` (every key checked, see `check_options`)."""
    if isinstance(value, str):
      items: dict[str, Any] = {"name": value}
    elif isinstance(value, Mapping) or hasattr(value, "to_dict"):
      items = dict(value.to_dict() if hasattr(value, "to_dict") else value)
    else:
      raise ConfigError(f"{where} must be a {self.kind} name or a section with a 'name', got {value!r}")
    items.update(overrides)
    if "name" not in items:
      raise ConfigError(f"{where} needs a 'name' (one of {sorted(self)})")
    name = items.pop("name")
    spec = self.check_options(name, list(items), where)
    return {"name": name, **spec.defaults(), **items}

  def owners(self, option: str) -> list[str]:
    """The registered entries that have `option`."""
    return sorted(n for n, s in self.items() if option in s.options)


# One line per kind: (kind, packages its plug-ins live in, where a config names one).
DATASETS: Registry = Registry("dataset", ("ae_jax.data", "ae_jax.generation"), "config.data.name")
MODELS: Registry = Registry("model", ("ae_jax.models", "ae_jax.generation"), "config.model.name")
EVALUATORS: Registry = Registry("evaluator", ("ae_jax.evaluators",), "config.evals.NAME.type")
LOSSES: Registry = Registry(
  "loss term",
  ("ae_jax.losses", "ae_jax.quantizers", "ae_jax.models", "ae_jax.metrics", "ae_jax.generation"),
  "config.loss key",
)
QUANTIZERS: Registry = Registry("quantizer", ("ae_jax.quantizers",), "config.model.quantizer.name")
DISCRIMINATORS: Registry = Registry(
  "discriminator", ("ae_jax.models",), "config.adversarial.discriminator.name"
)


def _format(value: Any) -> str:
  value = value.get() if hasattr(value, "get") and type(value).__name__ == "FieldReference" else value
  text = repr(tuple(value) if isinstance(value, list) else value)
  return text if len(text) <= 24 else text[:21] + "..."


def listing(width: int = 110) -> list[str]:
  """Every registered plug-in by kind: its name and description, then its options and metadata, wrapped
  to `width` characters."""
  import textwrap

  lines: list[str] = []
  for reg in Registry.ALL.values():
    lines.append(f"{reg.plural} ({len(reg)}):")
    for name, spec in reg.items():
      text = " ".join(f"{name}: {spec.description or '(no description)'}".split())
      lines += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="      ")
      extra = [f"{k}={_format(v)}" for k, v in spec.options.items()] + spec.details()
      if extra:
        lines += textwrap.wrap(", ".join(extra), width, initial_indent="      ", subsequent_indent="      ")
  return lines


if __name__ == "__main__":  # the registries plug-ins fill are those of the imported module, not __main__'s
  from ae_jax.core import registry

  print("\n".join(registry.listing()))
