"""The project's error types: everything a user can fix (a config, a path, a dataset, a workdir).

Entry points print these as one line (`error: ...`) and exit non-zero; any other exception is a bug and
keeps its traceback. Each subclasses the built-in type it refines, so `except ValueError` still works.
"""

from __future__ import annotations


class AEJaxError(Exception):
  """Base class: a problem with the user's input or environment, stated with how to fix it."""


class ConfigError(AEJaxError, ValueError):
  """A config key or value is invalid (unknown key, bad value, an option the dataset or model lacks)."""


class DataError(AEJaxError, ValueError):
  """A dataset cannot be read as configured (a corrupt file, inconsistent shapes, an empty split)."""


class DataNotFoundError(AEJaxError, FileNotFoundError):
  """A dataset or data file is not where the config says (nothing prepared, no local copy)."""


class WorkdirError(AEJaxError, OSError):
  """The workdir cannot be used: a file, not writable, read-only, or locked by another process."""


def did_you_mean(name: str, choices, prefix: str = "") -> str:
  """ "did you mean 'x'? " for the closest of `choices` to a misspelled `name`, or "" if none is close."""
  import difflib

  close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
  return f"did you mean '{prefix}{close[0]}'? " if close else ""
