"""Random-access sources and where data lives: the data root, in-memory sources, views, and tfds.

A source is any random-access sequence of record dicts (`len(source)`, `source[i]`): a tfds data source
over ArrayRecord files, an `ArraySource` in memory, a `SplitView` of another source.

Local data is looked for under one root (`data_root`): `config.data.root`, else `$AE_JAX_DATA`, else
`../shared/data` beside the project. tfds datasets are read with `tfds.data_source` (no TensorFlow);
`tfds_or_local` is the one place that prefers tfds' own prepared copy and otherwise prepares a local
TensorFlow-free builder once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)

Record = Mapping[str, Any]
DATA_ENV = "AE_JAX_DATA"
DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # <project>/../shared/data


def data_root(data: ml_collections.ConfigDict | None = None) -> Path:
  """The folder local data is read from: config.data.root, else $AE_JAX_DATA, else ../shared/data."""
  root = (data.get("root") if data is not None else None) or os.environ.get(DATA_ENV)
  return Path(root) if root else DEFAULT_ROOT


def path_candidates(path: str, data: ml_collections.ConfigDict) -> list[Path]:
  """Where a configured path may be, in order: an absolute path as given; a relative one from the working
  directory, then under the data root."""
  p = Path(os.path.expanduser(path))
  return [p] if p.is_absolute() else [Path.cwd() / p, data_root(data) / p]


def resolve_path(path: str, data: ml_collections.ConfigDict, what: str) -> Path:
  """The first of `path_candidates` that exists. Raises DataNotFoundError naming every place tried."""
  candidates = path_candidates(path, data)
  for c in candidates:
    if c.exists():
      return c
  tried = " or ".join(str(c) for c in candidates)
  raise DataNotFoundError(
    f"{what} {path!r} not found (looked for {tried}); give an absolute path, or set config.data.root / "
    f"${DATA_ENV} to the folder that holds it"
  )


class ArraySource:
  """A random-access source held in memory as one stacked numpy array per record field.

  Reading a tfds ArrayRecord source record by record costs about 0.3 ms each on a 2-core CPU, which
  starves a small model; read once in bulk (`__getitems__`, ~40 us a record) and serve from memory.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)
    self._len = len(next(iter(self.arrays.values())))

  @classmethod
  def from_source(cls, source: Sequence[Record], chunk: int = 10_000) -> ArraySource:
    """Reads every record of `source` (`gather`ed in chunks, so with `__getitems__` when it has one)."""
    if isinstance(source, ArraySource):
      return source
    chunks = [gather(source, np.arange(s, min(s + chunk, len(source)))) for s in range(0, len(source), chunk)]
    return cls({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}


class SplitView:
  """Random-access view of the records `indices` of `source` (a subset, a hold-out, a filtered split)."""

  def __init__(self, source: Sequence[Record], indices: Sequence[int]):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Any:
    return self.source[int(self.indices[i])]


def gather(source: Sequence[Record], indices: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
  """Records `indices` [n] of `source`, one array [n, ...] per field (numeric fields are fresh copies).

  An ArraySource is indexed with numpy (one copy per field), a SplitView maps the indices and gathers
  from its source, a source with `__getitems__` (tfds data sources) reads them in one call, any other
  sequence record by record; records read one at a time are stacked by `stack_records`.
  """
  indices = np.asarray(indices, np.int64).reshape(-1)
  if isinstance(source, ArraySource):
    return {k: np.take(v, indices, axis=0) for k, v in source.arrays.items()}
  if isinstance(source, SplitView):
    return gather(source.source, source.indices[indices])
  keys = indices.tolist()  # Python ints: tfds sources take integer keys only
  records = None
  if hasattr(source, "__getitems__"):
    try:
      records = source.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data's __getitems__ cannot be called; a real error recurs below
      pass
  return stack_records([source[i] for i in keys] if records is None else records)


def stack_records(records: Sequence[Record]) -> dict[str, np.ndarray]:
  """Records (dicts with the keys of the first) as one array [n, ...] per field.

  A field whose values are numbers or numeric arrays of one shape is stacked (`np.stack` promotes
  Python scalars to numpy ones); any other field (arrays of different shapes, bytes, text, nested dicts)
  becomes an object array [n] holding the values as they are, so nothing is padded, truncated or
  converted (numpy's bytes dtype would drop trailing NUL bytes of encoded images).
  """
  out = {}
  for k in records[0]:
    values = [r[k] for r in records]
    arrays = [np.asarray(v) for v in values]
    if all(a.dtype.kind in "biufc" and a.shape == arrays[0].shape for a in arrays):
      out[k] = np.stack(arrays)
    else:
      out[k] = np.empty(len(values), object)
      for j, v in enumerate(values):
        out[k][j] = v
  return out


def hold_out(source: Sequence[Record], n: int) -> tuple[Sequence[Record], Sequence[Record]]:
  """(the first len - n records, the last n): a validation split carved from a training split."""
  if not 0 < n < len(source):
    raise DataError(
      f"config.data.validation_size={n} must be between 1 and {len(source) - 1} (the training split has "
      f"{len(source)} records)"
    )
  cut = len(source) - n
  return SplitView(source, range(cut)), SplitView(source, range(cut, len(source)))


def in_memory(source: Sequence[Record]) -> Sequence[Record]:
  """`source` read into an ArraySource (lists and ArraySources are returned as they are).

  A prepared tfds split (or a SplitView of one) is read from its files once per process: opening the
  same dataset again (another run in a notebook, an evaluation after training) takes the records read
  the first time, as long as the dataset's files are unchanged (`_files_key`). Those arrays are
  read-only and shared; a view's records are a copy.
  """
  if isinstance(source, (list, ArraySource)):
    return source
  base = source.source if isinstance(source, SplitView) else source
  key = _files_key(base)
  if key is None:
    return ArraySource.from_source(source)
  read = _READ.pop(key, None)
  if read is None:
    read = _read_only(ArraySource.from_source(base))
  _READ[key] = read  # the most recently used last
  while len(_READ) > _READ_MAX:
    _READ.pop(next(iter(_READ)))
  return read if base is source else ArraySource(gather(read, source.indices))


_READ: dict[tuple, ArraySource] = {}  # _files_key -> the split's records, in order of use
_READ_MAX = 4  # splits kept (Fashion-MNIST's two: 55 MB; CIFAR-10's: 184 MB)


def _read_only(source: ArraySource) -> ArraySource:
  for array in source.arrays.values():
    array.setflags(write=False)
  return source


def _files_key(source: Any) -> tuple | None:
  """What identifies the records of a split of a prepared tfds dataset (a tfds ArrayRecordDataSource): its
  folder, split and decoders, and the name, size and modification time of every file in the folder.
  None for any other source, which is then read every time."""
  cls = type(source)
  if cls.__name__ != "ArrayRecordDataSource" or not cls.__module__.startswith("tensorflow_datasets"):
    return None
  folder = str(source.dataset_info.data_dir)
  if not os.path.isdir(folder):
    return None
  files = tuple(
    sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file())
  )
  return folder, str(source.split), repr(source.decoders), files


def tfds_root(data_dir: str | None) -> str:
  """The tfds data directory: data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return data_dir or os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def builders() -> Any:
  """The module of the local datasets' tfds builders (`ae_jax.data._tfds_builders`), imported on first use:
  it imports tensorflow_datasets, which `ae_jax.data` itself does not need."""
  from ae_jax.data import _tfds_builders

  return _tfds_builders


def tfds_source(name: str, split: str, data: ml_collections.ConfigDict) -> Sequence[Record]:
  """`tfds.data_source(name, split)` over prepared ArrayRecord files (downloaded and prepared first when
  config.data.download; that needs TensorFlow). Raises DataNotFoundError saying how to prepare it."""
  import tensorflow_datasets as tfds

  folder = Path(tfds_root(data.data_dir)) / name.split("/")[0].split(":")[0]
  existed = folder.exists()
  try:
    return tfds.data_source(name, split=split, data_dir=data.data_dir, download=bool(data.download))
  except Exception as e:  # noqa: BLE001 - tfds raises assorted types for a missing or unpreparable dataset
    if not existed:
      remove_empty_folders(folder)  # a failed download leaves its empty folders behind
    raise DataNotFoundError(
      f"tfds dataset '{name}' split '{split}' is not prepared as ArrayRecord in "
      f"{tfds_root(data.data_dir)} ({type(e).__name__}: {' '.join(str(e).split())[:160]}); prepare it "
      "online with `pip install 'ae-jax[tfds-download]'` and --config.data.download=True, or point "
      "--config.data.data_dir at a tfds directory that has it"
    ) from e


def remove_empty_folders(folder: Path) -> None:
  """Removes `folder` and the folders under it that hold no file (a folder with a file stays)."""
  if not folder.is_dir():
    return
  for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
    if not any(path.iterdir()):
      path.rmdir()
  if not any(folder.iterdir()):
    folder.rmdir()


def _prepared_tfds(name: str, split: str, data_dir: str | None) -> Sequence[Record] | None:
  """tfds' own `name` if it is already prepared as ArrayRecord in data_dir; else None (without asking
  tfds when its folder is absent, which would only log a warning)."""
  import tensorflow_datasets as tfds

  if not os.path.isdir(os.path.join(tfds_root(data_dir), name)):
    return None
  builder = tfds.builder(name, data_dir=data_dir)
  if not is_prepared(builder):
    return None
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError:  # prepared, but as tfrecord (not random access)
    log.warning("tfds %s in %s is not ArrayRecord; using the local copy instead", name, builder.data_dir)
    return None
  log.info("%s %s: tfds from %s (%d records)", name, split, builder.data_dir, len(source))
  return source


def tfds_or_local(
  tfds_name: str | None,
  split: str,
  data: ml_collections.ConfigDict,
  local_builder: Callable[[], Any],
  local_input: Path,
  how_to_get: str,
  *,
  local_ready: bool | None = None,
  tfds_split: str | None = None,
  tfds_select: Callable[[Sequence[Record]], Sequence[Record]] | None = None,
) -> Sequence[Record]:
  """A split of tfds' own dataset `tfds_name` if prepared (or downloadable with config.data.download),
  else of a local TensorFlow-free builder prepared once from `local_input`.

  Args:
    tfds_name: tfds' registered name, or None when only the local builder applies.
    split: the split to read ("train", "test", or a tfds slice such as "train[:10%]").
    local_builder: () -> a `tfds.core.GeneratorBasedBuilder` writing ArrayRecord into config.data.data_dir.
    local_input: the file or folder the local builder prepares from.
    how_to_get: the end of the error message: how to obtain the data.
    local_ready: whether local_input holds what the builder needs (default: it exists).
    tfds_split, tfds_select: read tfds_split (default `split`) of tfds' dataset and pass it through
      tfds_select (e.g. a filter rebuilding an official split that tfds does not have).
  Raises:
    DataNotFoundError: nothing prepared and no local input (one line ending with `how_to_get`).
  """
  if tfds_name is not None:
    source = _prepared_tfds(tfds_name, tfds_split or split, data.data_dir)
    if source is None and data.download:
      source = tfds_source(tfds_name, tfds_split or split, data)
    if source is not None:
      return source if tfds_select is None else tfds_select(source)
  builder = local_builder()
  if not is_prepared(builder):
    if not (local_input.exists() if local_ready is None else local_ready):
      raise DataNotFoundError(
        f"{tfds_name or builder.name}: nothing prepared in {tfds_root(data.data_dir)} and no local copy at "
        f"{local_input}; {how_to_get}"
      )
    prepare(builder, local_input)
  source = builder.as_data_source(split=split)
  log.info(
    "%s %s: %s from %s (%d records)",
    tfds_name or builder.name,
    split,
    builder.name,
    builder.data_dir,
    len(source),
  )
  return source


def is_prepared(builder: Any) -> bool:
  """Whether a tfds builder's dataset is prepared (`builder.is_prepared()`), asking tfds only when its
  folder has a dataset_info.json: tfds warns about every folder without one, i.e. on every first
  preparation and every missing dataset, where "not prepared" is the whole answer."""
  return (builder.data_path / "dataset_info.json").exists() and builder.is_prepared()


def prepare(builder: Any, source: Any) -> None:
  """Prepares a local tfds builder once (ArrayRecord files written to a temporary directory and renamed
  when complete), announcing it in one line; tfds' own banners go to the log only."""
  from ae_jax.core import console

  log.info(
    "preparing %s from %s into %s (once; later runs read it directly)", builder.name, source, builder.data_dir
  )
  console.quiet_tfds()
  with console.captured_stdout(logging.getLogger("tensorflow_datasets")):
    builder.download_and_prepare()
