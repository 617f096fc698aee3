"""The command line of every command: absl flags with a config file and --config.KEY=VALUE overrides parsed
into one `error:` line on any mistake (`parse_flags_or_exit`), plug-ins named `module:name` by flag
(`plugin_flags`, `switch_model`), and non-finite numbers refused before any compute (`nonfinite_options`).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from ae_jax.runner.config import RENAMED, nonfinite_paths, unknown_key_message


def own_flags_parser(flag_values: Any, usage: str) -> Any:
  """absl app.run's flags_parser for a command with a flag set of its own (not absl's global FLAGS, so
  several commands can be imported into one process): `parse_flags_or_exit` on it, and the global set
  (absl's own flags only, in such a command's process) marked parsed, as app.run requires."""
  from absl import flags

  def parse(argv: list[str]) -> list[str]:
    rest = parse_flags_or_exit(argv, flag_values, usage)
    flags.FLAGS(argv[:1])
    return rest

  return parse


def nonfinite_options(flag_values: Any, config_flag: str = "config") -> list[str]:
  """The command's float flags and the config's numbers (at any depth) that are NaN or infinite, as
  "--name=value" / "--config.a.b=value" strings: a NaN learning rate or temperature is refused before any
  compute instead of surfacing as a non-finite loss later."""
  bad = []
  for name in flag_values:
    if name == config_flag:
      continue
    bad += nonfinite_paths(flag_values[name].value, f"--{name}")
  config = getattr(flag_values, config_flag, None)
  if config is not None:
    bad += nonfinite_paths(config.to_dict(), f"--{config_flag}")
  return bad


def parse_flags_or_exit(
  argv: list[str], flag_values: Any, usage: str, config_flag: str = "config"
) -> list[str]:
  """Parses absl flags (a config file with --config.KEY=VALUE overrides); a bad command line or config file
  exits with one line naming the problem, instead of a traceback.

  Two forms for plug-ins of your own work as written (`plugin_flags`, `switch_model`):
  `--config.loss.my_module:my_term=0.01` (a key with a colon, which ml_collections' path parser cannot read
  unquoted) and `--config.model.name=my_module:my_model` (the model section then holds the new model's
  options at their defaults plus the --config.model.KEY flags, not the file's model's options)."""
  try:
    _quote_plugin_keys(argv, flag_values, config_flag)
    rest = flag_values(argv)
    config = getattr(flag_values, config_flag, None)
    if config is not None:
      config.keys()  # config files load lazily: surface a missing or broken file now
      switch_model(flag_values, config_flag)
    bad = nonfinite_options(flag_values, config_flag)
    if bad:
      sys.exit(f"error: {bad[0]}: every number of a config or command must be finite (usage: {usage})")
    return rest
  except Exception as e:  # noqa: BLE001 - absl / ml_collections raise several types for bad flags
    text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    key = re.fullmatch(r"\"?'(\w+)'\"?", text)  # ml_collections' KeyError for --config.A.B.KEY, no A.B
    missing = [a.split("=")[0] for a in argv if key and f".{key.group(1)}." in a]
    if missing:
      section = missing[0].lstrip("-").rsplit(".", 1)[0]
      text = (
        f"{missing[0]}: there is no {section} to set a key of; add a section whole, e.g. an evaluator "
        f"--config.evals.NAME=TYPE or --config.evals.NAME=\"{{'type': TYPE, 'split': 'test'}}\""
      )
    if m := re.search(r"Traceback \(most recent call last\):.*?ae_jax\.core\.errors\.\w+: (.*)$", text):
      text = m.group(1)  # a config file's get_config raised the project's own error: its message only
    if m := re.match(r"^'*([\w.]+)'*\s+Did you mean \"([\w.]+)\"", text):  # ml_collections' unknown key
      text = f"unknown config key '{m.group(1)}'; did you mean '{m.group(2)}'?"
    elif m := re.fullmatch(r"[\"']+(\w+)[\"']+", text):  # no close match: perhaps a moved quantizer option
      text = unknown_key_message(m.group(1))
    for old, replacement in RENAMED.items():
      if re.search(rf"\b{old}\b", text):
        text = replacement
    sys.exit(f"error: {text} (usage: {usage})")


# Sections whose keys are plug-in names: the rest of a flag's path is one key.
_NAME_KEYED = ("loss", "loss_schedules")


def plugin_flags(argv: list[str], config_flag: str = "config") -> list[str]:
  """`argv` with each --config.PATH whose path names a plug-in as `module:name` written in the quoted form
  that ml_collections' path parser reads: `--config.loss.my_module:my_term=0.01` becomes
  `--config.loss["my_module:my_term"]=0.01` (in config.loss and config.loss_schedules the whole rest of the
  path is the key, so `--config.loss.my_pkg.terms:smooth=0.1` is refused naming that key: their keys take no
  dots); elsewhere each path part holding a colon is quoted. Other arguments are returned unchanged."""
  prefix = re.compile(rf"^(-{{1,2}}(?:no)?{re.escape(config_flag)}\.)([^=]*)(=.*)?$", re.DOTALL)
  out = []
  for arg in argv:
    m = prefix.match(arg)
    path = m.group(2) if m else ""
    if not m or ":" not in path or any(c in path for c in "[]'\""):
      out.append(arg)
      continue
    parts = path.split(".")
    if parts[0] in _NAME_KEYED and len(parts) > 1:
      parts = [parts[0], ".".join(parts[1:])]
    quoted = parts[0] + "".join(f'["{p}"]' if ":" in p else f".{p}" for p in parts[1:])
    out.append(m.group(1) + quoted + (m.group(3) or ""))
  return out


def _quote_plugin_keys(argv: list[str], flag_values: Any, config_flag: str) -> None:
  """Rewrites (`plugin_flags`), in place, `argv` and the argument list the config flag reads its overrides
  from (the list given to DEFINE_config_file as sys_argv, else sys.argv)."""
  flag = flag_values[config_flag] if config_flag in flag_values else None
  lists = [argv, getattr(flag, "_sys_argv", None) or sys.argv]  # ml_collections keeps sys_argv there
  for args in {id(a): a for a in lists if isinstance(a, list)}.values():
    args[:] = plugin_flags(args, config_flag)


def switch_model(flag_values: Any, config_flag: str = "config") -> None:
  """When --config.model.name names another model than the config file's, config.model becomes that model's
  section (`models.model_config`: every option at its default) with the --config.model.KEY flags given
  applied to it, so the file's model's options do not follow it (a key the new model lacks is one error
  naming its options)."""
  from ml_collections.config_flags import config_flags as cf

  name_flag = f"{config_flag}.model.name"
  if name_flag not in flag_values or not flag_values[name_flag].present:
    return
  config = flag_values[config_flag]
  file_name, name = flag_values[name_flag].default, config.value.model.name
  if name == file_name:
    return
  from ae_jax import models

  given = {
    path.split(".", 1)[1]: value
    for path, value in cf.get_override_values(config).items()
    if path.startswith("model.") and path != "model.name"
  }
  top = {key: value for key, value in given.items() if "." not in key}
  section = models.model_config(name, **top)
  for key, value in given.items():
    if "." in key:
      cf.config_path.set_value(key, section, value)
  with config.value.unlocked():
    config.value.model = section
