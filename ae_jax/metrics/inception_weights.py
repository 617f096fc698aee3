"""pytorch-fid's FID Inception weights for `inception.InceptionV3`: found, checked, read and converted.

    variables = load_variables()   # {"params": ..., "batch_stats": ...} as jnp arrays, once per process

The file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (`URL`: the `FID_WEIGHTS_URL` of
pytorch-fid 0.3.0's src/pytorch_fid/inception.py; torch-fidelity downloads a file of the same name from its
own v0.2.0 release): a PyTorch state dict in torchvision's names, 472 tensors (`Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.bn.running_var`, ..., `fc.weight` [1008, 2048], `fc.bias`; BatchNorm's
`num_batches_tracked` counters, where a file has them, are ignored). It is looked for, in order:
1. the `path` argument; 2. `$AE_JAX_INCEPTION` (the file, or a folder holding it); 3. the user cache,
`$XDG_CACHE_HOME/ae_jax/` or `~/.cache/ae_jax/`; 4. torch.hub's cache, where pytorch-fid downloads it
(`$TORCH_HOME/hub/checkpoints/`, default `~/.cache/torch/hub/checkpoints/`). When none has it, it is
downloaded into the user cache (urllib, `timeout` seconds without data; written to a temporary file and
renamed into place). Offline, the ConfigError names the variable, the cache path and the URL.

A file is used only when its sha256 is `SHA256`. Where that digest comes from: the 8 hex digits in the
file name are torch.hub's convention for the start of the file's sha256 (pytorch-fid itself never checks
it); neither pytorch-fid nor torch-fidelity publishes the whole digest, and `SHA256` is the one that
independent public projects pin for this URL and for torch-fidelity's copy (several agree, two also record
the size, 95,628,359 bytes), consistent with the 8 digits of the name.
It is read without PyTorch (`read_state_dict`): a .pth is a zip (PyTorch >= 1.6) or a sequence of pickles
followed by raw storages (older), and its pickle is unpickled with only an ordered dict, PyTorch's tensor
constructor and its storage types allowed (anything else is refused), tensors becoming numpy arrays.
Conversion is a renaming and transposition (conv weight [O, I, kH, kW] -> kernel [kH, kW, I, O], fc weight
[1008, 2048] -> kernel [2048, 1008]); BatchNorm's `num_batches_tracked` is dropped.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import os
import pickle
import struct
import urllib.request
import zipfile
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax.core import workdir
from ae_jax.core.errors import ConfigError
from ae_jax.metrics.inception import InceptionV3

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILE_NAME
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
ENV_VAR = "AE_JAX_INCEPTION"
TIMEOUT = 60.0  # seconds without data before a download gives up

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- finding the file


def cache_dir() -> Path:
  """The user cache folder: $XDG_CACHE_HOME/ae_jax, or ~/.cache/ae_jax."""
  return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ae_jax"


def _torch_hub_file() -> Path:
  torch_home = (
    os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
  )
  return Path(torch_home) / "hub" / "checkpoints" / FILE_NAME


def _where_to_put_it() -> str:
  return (
    f"put pytorch-fid's {FILE_NAME} (sha256 {SHA256[:16]}...) at {cache_dir() / FILE_NAME}, or set "
    f"${ENV_VAR} to its path; it is downloaded from {URL}"
  )


def sha256_of(path: str | Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def check_file(path: str | Path) -> Path:
  """`path` if it is pytorch-fid's weights file (sha256 `SHA256`); ConfigError otherwise."""
  path = Path(path)
  digest = sha256_of(path)
  if digest != SHA256:
    raise ConfigError(
      f"FID Inception: {path} is not pytorch-fid's {FILE_NAME} (sha256 {digest[:16]}..., expected "
      f"{SHA256[:16]}...): a damaged or different file; delete it and download {URL} again"
    )
  return path


def download(target: str | Path, url: str = URL, timeout: float = TIMEOUT) -> Path:
  """Downloads `url` to `target` (its folder created), refused unless its sha256 is `SHA256`; written
  to a temporary file renamed into place. ConfigError when offline or the server fails."""
  target = Path(target)
  digest = hashlib.sha256()

  def write(f: IO[bytes]) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      while chunk := response.read(1 << 20):
        digest.update(chunk)
        f.write(chunk)
    if digest.hexdigest() != SHA256:
      raise ConfigError(
        f"FID Inception: the file downloaded from {url} has sha256 {digest.hexdigest()[:16]}..., expected "
        f"{SHA256[:16]}...; not used. {_where_to_put_it()}"
      )

  log.info("FID Inception: downloading %s to %s", url, target)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir.write_whole(target, write)
  except OSError as e:  # urllib's URLError, timeouts, an unwritable cache
    raise ConfigError(
      f"FID Inception: the weights are not here and could not be downloaded ({e}); {_where_to_put_it()}"
    ) from None
  return target


def find_weights(
  path: str | Path | None = None, *, allow_download: bool = True, timeout: float = TIMEOUT
) -> Path:
  """Where the weights file is (module docstring's order), downloading it into the user cache when it is
  nowhere (a download is checked; a file found is checked by `load_variables`). ConfigError naming where to
  put it when it is nowhere and cannot be downloaded, or when `path` or $AE_JAX_INCEPTION is not a file."""
  for given, source in ((path, "the given path"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
    if given is None:
      continue
    given = Path(given).expanduser()
    if given.is_dir():
      given = given / FILE_NAME
    if not given.is_file():
      raise ConfigError(f"FID Inception: {source} {given} is not a file; {_where_to_put_it()}")
    return given
  for candidate in (cache_dir() / FILE_NAME, _torch_hub_file()):
    if candidate.is_file():
      return candidate
  if not allow_download:
    raise ConfigError(f"FID Inception: the weights are not here (downloads off); {_where_to_put_it()}")
  return download(cache_dir() / FILE_NAME, timeout=timeout)


# ----------------------------------------------------------------------------- reading a .pth without torch

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization's MAGIC_NUMBER, before the zip format
_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _StorageType:
  def __init__(self, name: str) -> None:
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
  """A tensor whose storage may not be read yet: (storage key, offset, size, stride) in elements."""

  def __init__(
    self, storage: tuple[str, np.dtype, int], offset: int, size: Any, stride: Any, *_: Any
  ) -> None:
    self.key, self.dtype, self.numel = storage
    self.offset, self.size, self.stride = int(offset), tuple(map(int, size)), tuple(map(int, stride))
    if len(self.size) != len(self.stride) or min((self.offset, *self.size, *self.stride), default=0) < 0:
      raise ValueError(f"a tensor of size {self.size}, stride {self.stride}, offset {self.offset}")
    if (
      all(self.size)
      and self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) >= self.numel
    ):
      raise ValueError(f"a tensor of size {self.size} reaches past its storage of {self.numel} elements")

  def materialize(self, storage: np.ndarray) -> np.ndarray:
    itemsize = storage.dtype.itemsize
    strides = tuple(s * itemsize for s in self.stride)
    view = np.lib.stride_tricks.as_strided(storage[self.offset :], self.size, strides, writeable=False)
    return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch state dict into {name: _TensorRef}: only an ordered dict, _rebuild_tensor_v2 and
  the storage types are allowed; any other class or function is refused."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _TensorRef
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"refusing {module}.{name}: a state dict holds tensors only")

  def persistent_load(self, pid: Any) -> tuple[str, np.dtype, int]:
    if not (
      isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
    ):
      raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError("storage views (PyTorch < 0.4 files) are not supported")
    return str(pid[2]), pid[1].dtype, int(pid[4])


def _tensors(tree: Any) -> dict[str, _TensorRef]:
  if not isinstance(tree, dict) or not all(
    isinstance(k, str) and isinstance(v, _TensorRef) for k, v in tree.items()
  ):
    raise ValueError("the file holds no state dict (a mapping of names to tensors)")
  return dict(tree)


def _storage(data: bytes, ref: _TensorRef, byteorder: str) -> np.ndarray:
  need = ref.numel * ref.dtype.itemsize
  if len(data) < need:
    raise ValueError(f"storage {ref.key} has {len(data)} bytes, expected {need}")
  return np.frombuffer(data, ref.dtype.newbyteorder(byteorder), ref.numel)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError("a zip without one <archive>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
    order = {"little": "<", "big": ">"}[byteorder]
    refs = _tensors(_StateDictUnpickler(z.open(pickles[0])).load())
    storages = {ref.key: _storage(z.read(f"{prefix}data/{ref.key}"), ref, order) for ref in refs.values()}
  return {name: ref.materialize(storages[ref.key]) for name, ref in refs.items()}


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    if _StateDictUnpickler(f).load() != _LEGACY_MAGIC:
      raise ValueError("neither a zip nor a PyTorch pickle (wrong magic number)")
    _StateDictUnpickler(f).load()  # protocol version
    little = _StateDictUnpickler(f).load().get("little_endian", True)  # sys_info
    refs = _tensors(_StateDictUnpickler(f).load())
    keys = _StateDictUnpickler(f).load()  # the storages' keys, in the order their data follows
    by_key = {ref.key: ref for ref in refs.values()}
    storages = {}
    for key in keys:
      (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
      ref = by_key[str(key)]
      storages[ref.key] = _storage(f.read(numel * ref.dtype.itemsize), ref, "<" if little else ">")
  return {name: ref.materialize(storages[ref.key]) for name, ref in refs.items()}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """A PyTorch state dict file (torch.save of {name: tensor}, zip or legacy format) -> {name: numpy array},
  without PyTorch. ConfigError when the file is not one."""
  path = Path(path)
  try:
    return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    struct.error,
    zipfile.BadZipFile,
  ) as e:
    raise ConfigError(f"FID Inception: {path} cannot be read as a PyTorch state dict ({e})") from None


# ----------------------------------------------------------------------------- conversion


@functools.lru_cache(maxsize=1)
def _layout() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """torch name -> (Flax collection, path in it, Flax shape), for every variable of InceptionV3."""
  shapes = jax.eval_shape(lambda: InceptionV3().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
  suffix = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
  }
  layout = {}
  for collection, tree in shapes.items():
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      path = tuple(k.key for k in keys)
      layout[".".join((*path[:-1], suffix[(collection, path[-1])]))] = (collection, path, tuple(leaf.shape))
  return layout


def _to_torch(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if name.endswith("conv.weight"):
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1] if name == "fc.weight" else shape


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """{torch name: torch shape} of pytorch-fid's state dict (num_batches_tracked left out): 472 tensors."""
  return {name: _to_torch(name, shape) for name, (_, _, shape) in _layout().items()}


def convert(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """pytorch-fid's state dict {torch name: array} -> InceptionV3's variables {"params", "batch_stats"}
  (numpy float32). ConfigError when a tensor is missing, unexpected or of the wrong shape."""
  layout = _layout()
  names = {n for n in state_dict if not n.endswith(".num_batches_tracked")}
  missing, unexpected = sorted(set(layout) - names), sorted(names - set(layout))
  if missing or unexpected:
    raise ConfigError(
      f"FID Inception: not pytorch-fid's state dict ({len(missing)} tensors missing, e.g. {missing[:2]}; "
      f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
    )
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for name, (collection, path, shape) in layout.items():
    value = np.asarray(state_dict[name], np.float32)
    if value.shape != _to_torch(name, shape):
      expected = list(_to_torch(name, shape))
      raise ConfigError(f"FID Inception: {name} has shape {list(value.shape)}, expected {expected}")
    if name.endswith("conv.weight"):
      value = value.transpose(2, 3, 1, 0)  # [O, I, kH, kW] -> [kH, kW, I, O]
    elif name == "fc.weight":
      value = value.T
    node = variables[collection]
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.ascontiguousarray(value)
  return variables


@functools.lru_cache(maxsize=2)
def _load(path: str, size: int, mtime_ns: int) -> Any:
  variables = convert(read_state_dict(check_file(path)))
  return jax.tree.map(jnp.asarray, variables)


def load_variables(path: str | Path | None = None, *, allow_download: bool = True) -> Any:
  """InceptionV3's variables from pytorch-fid's weights (found, downloaded if needed and allowed, checked
  and converted as the module docstring says), as jnp arrays; once per process for an unchanged file."""
  file = find_weights(path, allow_download=allow_download)
  stat = file.stat()
  return _load(str(file.resolve()), stat.st_size, stat.st_mtime_ns)
