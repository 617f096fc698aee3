"""Reading one series file into checked columns: a text table (CSV with quoted fields, or whitespace-separated
fields) or a `.npy` array.

A text file is UTF-8 text (a byte-order mark is allowed); blank lines and lines starting with "#" are
skipped. Fields are split at commas (Python's csv module, so a quoted field may hold a comma) when the first
row has one, else at runs of whitespace. The first row is a header of column names when none of its fields
is a number, or when one of them is not a number where the next row has one. Only the columns asked for are
converted: values must be finite numbers; a time column holds ISO-8601 dates / times (2024-01-31T14:00,
2024-01-31 14:00:00.5, +01:00 offsets are taken to UTC) or numbers, strictly increasing; a label column holds
numbers or text.

A config names a column by header name or by 0-based index (negative: from the end). A problem in the file
is one DataError that says where as the file counts: "line 17" is its 1-based line number (header, comment
and blank lines included) and "column 3" its 1-based column number, with the header name when there is one;
in a .npy array, the 0-based array index [row, column].

`read_series` reads the value, label and time columns that a series_file config.data names; `read_table`
the cells of any series file.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import warnings
from pathlib import Path

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError, DataError, did_you_mean

NPY_MAGIC = b"\x93NUMPY"
CLEAN = "clean the file: fill in or remove the rows with missing, NaN or infinite values"


def format_time(t) -> str:
  """A time column's time as text: ISO-8601 to the finest unit it needs ('2024-01-31T14:00'), or a number."""
  if isinstance(t, np.datetime64):
    return str(np.datetime_as_string(t, unit="auto"))
  return f"{float(t):g}"


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


@dataclasses.dataclass(frozen=True)
class Table:
  """A file's cells. Text: `rows` of field strings and the 1-based file line number of each (`lines`);
  .npy: `array` [n, width] float64. `header`: column names, or None."""

  path: Path
  width: int
  header: list[str] | None = None
  rows: list[list[str]] | None = None
  lines: list[int] | None = None
  array: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.array) if self.array is not None else len(self.rows)

  def column_name(self, col: int) -> str:
    """'column 3 "temp"' (1-based, as the file counts; with its header name), or 'column index 2' (.npy)."""
    if self.array is not None:
      return f"column index {col}"
    return f"column {col + 1}" + (f' "{self.header[col]}"' if self.header else "")

  def at(self, i: int, col: int) -> str:
    """Where data row i, column col is: 'line 17, column 3 "temp" (counted from 1)', or 'array index [i, j]'
    (.npy)."""
    if self.array is not None:
      return f"array index [{i}, {col}]"
    return f"line {self.lines[i]}, {self.column_name(col)} (counted from 1)"

  def index(self, spec: str, what: str) -> int:
    """The column that config.data.`what` names: a 0-based index (negative: from the end) or a header name."""
    spec = str(spec).strip()
    names = self.header or []
    if spec in names:
      index = names.index(spec)
    elif spec.lstrip("-").isdigit():
      index = int(spec)
      if not -self.width <= index < self.width:
        raise ConfigError(
          f"config.data.{what}: column {index} is out of range ({self.path} has {self.width} columns: "
          f"0-based indices 0 to {self.width - 1}{f' or names {names}' if names else ''})"
        )
    else:
      raise ConfigError(
        f"config.data.{what}: {self.path} has no column {spec!r}; {did_you_mean(spec, names)}"
        + (
          f"its columns are {names}"
          if names
          else f"it has no header: use 0-based indices 0 to {self.width - 1}"
        )
      )
    return index % self.width

  def text(self, col: int) -> np.ndarray:
    """Column col's fields [n] as stripped strings (text files)."""
    return np.array([row[col].strip() for row in self.rows], dtype=str)

  def numbers(self, col: int, hint: str = "") -> np.ndarray:
    """Column col [n] as float64; DataError at the first field that is empty, not a number or not finite."""
    if self.array is not None:
      values = self.array[:, col]
      fields = None
    else:
      fields = self.text(col)
      try:
        values = fields.astype(np.float64)  # the float() grammar, vectorised
      except ValueError:
        i = next(i for i, f in enumerate(fields) if not _is_number(f))
        if not fields[i]:
          raise DataError(f"{self.path}: {self.at(i, col)} is empty; {CLEAN}") from None
        raise DataError(
          f"{self.path}: {self.at(i, col)} holds {str(fields[i])!r}, not a number; {hint or CLEAN}"
        ) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
      shown = repr(str(fields[bad[0]])) if fields is not None else str(values[bad[0]])
      more = f" ({len(bad) - 1} more in this column)" if len(bad) > 1 else ""
      raise DataError(f"{self.path}: {self.at(bad[0], col)} is {shown}, not a finite number{more}; {CLEAN}")
    return values

  def times(self, col: int) -> np.ndarray:
    """Column col [n] as datetime64[us] (ISO-8601 dates / times) or float64 (numbers), strictly increasing."""
    if self.array is not None or _is_number(self.rows[0][col]):
      hint = "a time column holds numbers or ISO-8601 dates / times (e.g. 2024-01-31T14:00:00), not both"
      times = self.numbers(col, hint)
    else:
      times = self._datetimes(col)
    later = times[1:] <= times[:-1]
    if later.any():
      i = int(np.argmax(later))
      raise DataError(
        f"{self.path}: the time column ({self.column_name(col)}) does not strictly increase: "
        f"{self.at(i + 1, col)} holds {format_time(times[i + 1])} after {format_time(times[i])}; sort the "
        "file by time and remove duplicate times, or set config.data.time_column='' to use row numbers"
      )
    return times

  def _datetimes(self, col: int) -> np.ndarray:
    fields = self.text(col)
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # numpy warns (and shifts to UTC) on time-zone offsets: parsed below
      try:
        times = np.array(fields, dtype="datetime64[us]")
        if not np.isnat(times).any() and not np.isin(np.char.lower(fields), ["now", "today"]).any():
          return times
      except (ValueError, Warning):
        pass
    out, zoned = [], set()
    for i, field in enumerate(fields):
      try:
        t = datetime.datetime.fromisoformat(field)  # rejects numpy's extras: "NaT", "now", "today"
      except ValueError:
        problem = "is empty" if not field else f"holds {str(field)!r}, which is not an ISO-8601 date / time"
        raise DataError(
          f"{self.path}: {self.at(i, col)} {problem} (the time column needs e.g. 2024-01-31T14:00:00, or "
          "numbers, in every row); fix the file, or set config.data.time_column to the right column"
        ) from None
      zoned.add(t.tzinfo is not None)
      if len(zoned) > 1:
        raise DataError(
          f"{self.path}: {self.at(i, col)}: the time column mixes times with and without a time-zone offset; "
          "give every time an offset, or none"
        )
      out.append(t.astimezone(datetime.UTC).replace(tzinfo=None) if t.tzinfo else t)
    return np.array(out, dtype="datetime64[us]")

  def labels(self, col: int, normal_values: list[str]) -> np.ndarray:
    """Anomaly labels [n] bool of a label column: True where the value is not one of `normal_values`
    (compared as numbers when every label is a number, else as text). DataError when no row is normal."""
    if self.array is not None:
      values = self.numbers(col)
    else:
      values = self.text(col)
      if (empty := np.flatnonzero(values == "")).size:
        raise DataError(
          f"{self.path}: {self.at(empty[0], col)} is empty: every row needs a label; fill it in"
        )
      try:
        values = values.astype(np.float64)
      except ValueError:
        pass  # text labels
    if values.dtype == np.float64:
      bad = [v for v in normal_values if not _is_number(v)]
      if bad:
        raise ConfigError(
          f"config.data.normal_values {bad} are not numbers, but the label column "
          f"({self.column_name(col)} of {self.path}) holds only numbers; list the numbers that mean normal"
        )
      anomalous = ~np.isin(values, [float(v) for v in normal_values])
    else:
      anomalous = ~np.isin(values, normal_values)
    if anomalous.all():
      seen = np.unique(values)
      raise DataError(
        f"{self.path}: no row of the label column ({self.column_name(col)}) holds a normal value "
        f"(config.data.normal_values={','.join(normal_values)!r}); its values are "
        f"{[str(v) for v in seen[:8]]}{' ...' if len(seen) > 8 else ''}: set config.data.normal_values to "
        "the ones that mean normal, joined with ','"
      )
    return anomalous


def _not_text(path: Path, why: str) -> DataError:
  return DataError(
    f"{path}: not a text CSV / whitespace-separated series ({why}); give a UTF-8 text table with one row "
    "per time step, or a .npy array"
  )


def _text_lines(path: Path, peek: bool) -> list[str]:
  """The file's lines (without line ends); with `peek`, only up to its second non-blank, non-comment line."""
  with open(path, "rb") as f:
    if peek:
      chunks, found = [], 0
      for line in f:
        chunks.append(line)
        found += bool(line.strip()) and not line.lstrip().startswith(b"#")
        if found == 2:
          break
      raw = b"".join(chunks)
    else:
      raw = f.read()
  if raw.startswith(NPY_MAGIC):
    raise _not_text(path, "it is a numpy .npy array: name it *.npy")
  if (nul := raw.find(b"\x00")) >= 0:
    raise _not_text(path, f"binary: a NUL byte at offset {nul}")
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    if peek and e.start >= len(raw) - 3:  # a character cut at the end of what was read
      text = raw[: e.start].decode("utf-8-sig")
    else:
      raise _not_text(path, f"binary or not UTF-8: byte {e.start} is 0x{raw[e.start]:02x}") from None
  return text.splitlines()


def _records(lines: list[str]) -> tuple[list[list[str]], list[int]]:
  """Rows of fields and their 1-based line numbers, skipping blank and comment ('#') lines."""
  first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
  rows, numbers = [], []
  if "," in first:
    reader = csv.reader(lines, skipinitialspace=True)
    for row in reader:
      if row and (row[0].strip() or len(row) > 1) and not row[0].lstrip().startswith("#"):
        rows.append(row)
        numbers.append(reader.line_num)
  else:
    for number, line in enumerate(lines, 1):
      fields = line.split()
      if fields and not fields[0].startswith("#"):
        rows.append(fields)
        numbers.append(number)
  return rows, numbers


def _is_header(rows: list[list[str]]) -> bool:
  """No field of the first row is a number, or one holds text where the second row has a number (an empty
  field is a missing value, not a name)."""
  if not any(_is_number(f) for f in rows[0]):
    return True
  if len(rows) < 2 or len(rows[1]) != len(rows[0]):
    return False
  return any(a.strip() and not _is_number(a) and _is_number(b) for a, b in zip(rows[0], rows[1], strict=True))


def read_table(path: Path, peek: bool = False) -> Table:
  """The cells of a series file (see the module docstring); with `peek`, only its header and first row
  (enough for the width). Raises DataError for a file that is not a table (binary, empty, ragged rows)."""
  if path.suffix.lower() == ".npy":
    try:
      array = np.load(path, mmap_mode="r" if peek else None, allow_pickle=False)
    except ValueError as e:
      raise DataError(f"{path}: not a readable .npy array ({e}); save it with numpy.save") from None
    if not array.size or array.ndim == 0:
      raise DataError(f"{path}: an empty array (shape {array.shape}): no rows")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
      raise DataError(f"{path}: a .npy array of {array.dtype}, not of numbers; save a numeric array")
    width = int(np.prod(array.shape[1:], dtype=int)) if array.ndim > 1 else 1
    if peek:
      return Table(path, width)
    return Table(path, width, array=np.asarray(array, np.float64).reshape(len(array), width))
  rows, lines = _records(_text_lines(path, peek))
  if not rows:
    raise DataError(f"{path}: empty: no rows (a series file has one row per time step)")
  header = None
  if _is_header(rows):
    header = [name.strip().strip('"') for name in rows[0]]
    if len(rows) == 1 and not peek:
      raise DataError(f"{path}: only a header (line {lines[0]}), no data rows")
    rows, lines = rows[1:], lines[1:]
  width = len(header) if header else len(rows[0])
  widths = np.array([len(r) for r in rows])
  if (ragged := np.flatnonzero(widths != width)).size:
    i = ragged[0]
    raise DataError(
      f"{path}: line {lines[i]} has {widths[i]} field{'s' if widths[i] != 1 else ''} where the "
      f"{'header' if header else f'first row (line {lines[0]})'} has {width}; every row needs the same "
      "columns (look for a missing value or a stray separator)"
    )
  return Table(path, width, header, rows, lines)


def split_list(text: str) -> list[str]:
  """'a, b,,c' -> ['a', 'b', 'c'] (a config option's items joined with ",")."""
  return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclasses.dataclass(frozen=True)
class SeriesFile:
  """One file's values [n, d] float64 (config.data.columns), label-column labels [n] bool (True =
  anomalous) or None, and time-column times [n] (datetime64[us] or float64, increasing) or None."""

  values: np.ndarray
  labels: np.ndarray | None = None
  times: np.ndarray | None = None


def read_series(path: Path, data: ml_collections.ConfigDict) -> SeriesFile:
  """The value, label and time columns of one file as config.data (series_file) names them: only these
  columns are read."""
  table = read_table(path)
  label = table.index(data.label_column, "label_column") if str(data.label_column) != "" else None
  time = table.index(data.time_column, "time_column") if str(data.time_column) != "" else None
  if label is not None and label == time:
    raise ConfigError(f"config.data.label_column and time_column name the same column of {path}")
  columns = [table.index(c, "columns") for c in split_list(data.columns)]
  for index, what in ((label, "label_column"), (time, "time_column")):
    if index is not None and index in columns:
      raise ConfigError(
        f"config.data.columns includes {table.column_name(index)} of {path}, which is config.data.{what}; "
        "leave it out of columns"
      )
  if not columns:
    columns = [i for i in range(table.width) if i not in (label, time)]
    hint = (
      f"config.data.columns is empty, so every column but the label and time columns is a value column: set "
      f"columns to the value columns{'' if time is not None else ', time_column to a time axis'}"
      f"{'' if label is not None else ', label_column to a label column'} (names or 0-based indices)"
    )
  else:
    hint = f"{CLEAN}, or pick other config.data.columns"
  if not columns:
    raise ConfigError(f"{path}: no value column left; set config.data.columns")
  values = np.stack([table.numbers(c, hint) for c in columns], axis=1)
  labels = None if label is None else table.labels(label, split_list(data.normal_values))
  return SeriesFile(values, labels, None if time is None else table.times(time))
