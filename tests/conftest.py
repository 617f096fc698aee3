"""Test setup: 8 simulated CPU devices (set before JAX is imported), quick compilation, and small shared
fixtures.

The suite's time is mostly compiling small programs (tests run their computations under `jax.jit`: an eager
computation compiles one program per operation), so compilation is made quick, never at the cost of a
comparison (both sides of an equality test run the same way):
- XLA's optimisations are off (`JAX_DISABLE_MOST_OPTIMIZATIONS=1`, inherited by the processes tests start);
  tests marked `integration`, whose time is running a real training, turn them back on.
- XLA's CPU backend emits fusions with its older emitters, which compile faster
  (`--xla_cpu_use_fusion_emitters=false`): `make test-fast` on 2 cores, cold, went from 7m41s to 5m31s
  and 4m48s (two runs). XLA aborts on a flag it does not know, so it is set only for the jaxlib versions
  it was checked with (0.10.x).

The tests compile the same small models many times, in this process and in the subprocesses they start
(which inherit these variables): JAX's persistent cache serves repeated compilations from disk (a training
run builds its step afresh each time, so a test that trains twice compiles once). The cache writes entries
without a lock, so each pytest-xdist worker has its own directory (a process must never read an entry
another is still writing); tests that run processes side by side give each its own too.
"""

import collections
import importlib.metadata
import os
import tarfile
import tempfile

_flags = [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
if importlib.metadata.version("jaxlib").startswith("0.10.") and "fusion_emitters" not in _flags[0]:
  _flags.append("--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join(f for f in _flags if f)
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  os.path.join(tempfile.gettempdir(), "ae_jax_test_jax_cache", os.environ.get("PYTEST_XDIST_WORKER", "main")),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ae_jax.core import parallel  # noqa: E402
from ae_jax.data import data_config  # noqa: E402
from ae_jax.data.sources import data_root  # noqa: E402
from ae_jax.quantizers import quantizer_config  # noqa: E402
from ae_jax.runner.config import default_config  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_trace_counter():
  chex.clear_trace_counter()
  yield


@pytest.fixture(autouse=True)
def _optimized_for_integration_tests(request):
  """Integration tests train for real: they run XLA's optimised programs."""
  if request.node.get_closest_marker("integration") is None:
    yield
    return
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1")


@pytest.fixture
def tiny_config():
  """A fast experiment: small MLP autoencoder on synthetic 8x8 images, 8 devices, global batch 16."""
  return make_tiny_config()


def make_tiny_config():
  """tiny_config's value, for fixtures of a wider scope."""
  c = default_config()
  c.model.name = "mlp_ae"
  c.model.hidden = (32, 16)
  c.model.code_dim = 4
  c.data = data_config("synthetic", shape=(8, 8, 1), num_train=96, num_test=40)
  c.batch_size = 16
  c.eval_batch_size = 16
  c.total_steps = 12
  c.log_every = 3
  c.evals.test.every = 0  # evaluated after training only
  del c.evals["reconstructions"]
  c.checkpoint_every = 4
  c.async_checkpoints = False
  c.optimizer.learning_rate = 3e-3
  return c


# A tiny VQ-VAE's config.model options (16 codes of 4 dimensions; 8x8 images -> a 2x2 code grid).
TINY_VQVAE = dict(
  hidden=8, res_hidden=4, num_res_layers=1, quantizer=quantizer_config("vq", num_codes=16, code_dim=4)
)


def train_tiny_vqvae(workdir: str, steps: int) -> None:
  """Trains a TINY_VQVAE on make_tiny_config's images for `steps` steps in `workdir` (a stage one)."""
  from ae_jax.models import model_config
  from ae_jax.runner import loop

  config = make_tiny_config()
  config.model = model_config("vqvae", **TINY_VQVAE)
  config.loss = {"mse": 1.0, "commitment": 1.0}
  config.total_steps = steps
  config.evals = {}
  loop.train_and_evaluate(config, workdir)


@pytest.fixture
def as_process(monkeypatch):
  """as_process(pid, nproc) makes the input pipeline believe it runs as process pid of nproc."""
  from ae_jax.data import pipeline

  def set_process(pid, nproc):
    monkeypatch.setattr(pipeline.jax, "process_count", lambda: nproc)
    monkeypatch.setattr(pipeline.jax, "process_index", lambda: pid)

  return set_process


def pytest_collection_modifyitems(config, items):
  """Files with `slow`, `integration` or `training` tests run first, then the others by their number of
  tests, most first (each file's tests in their order). `make test` runs pytest-xdist's `--dist loadfile`
  with `--no-loadscope-reorder`, so files are handed out in this order: a long file handed out last would
  leave the other worker idle while it runs (xdist's own reorder, by number of tests alone, puts the
  process tests, a few long tests per file, last)."""
  long_markers = ("slow", "integration", "training")
  heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in long_markers)}
  count = collections.Counter(item.path for item in items)
  items.sort(key=lambda item: (item.path not in heavy, -count[item.path]))  # stable: files stay whole


def process_env(devices: int, **extra: str) -> dict[str, str]:
  """The environment for a process a test starts: this one's (the compilation settings above included),
  with `devices` simulated CPU devices instead of 8, and the variables in `extra`."""
  flags = [
    f for f in os.environ["XLA_FLAGS"].split() if not f.startswith("--xla_force_host_platform_device_count=")
  ]
  return {
    **os.environ,
    "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
    **extra,
  }


def pytest_report_header(config):
  return f"jax {jax.__version__}, {jax.local_device_count()} local devices ({jax.default_backend()})"


def run_pmapped_steps(step_fn, state, host_batches, devices):
  """Runs the pmapped `step_fn` over `devices` on each global batch; returns the unreplicated state and
  the metrics of every step (on the host)."""
  p_step = jax.pmap(step_fn, axis_name=parallel.AXIS, devices=devices)
  rstate = parallel.replicate(state, devices)
  metrics = []
  for batch in host_batches:
    rstate, m = p_step(rstate, parallel.shard(parallel.split_for_devices(batch, len(devices)), devices))
    metrics.append(m)
  return jax.device_get(parallel.unreplicate(rstate)), jax.device_get(metrics)


def cifar_test_images(n: int) -> np.ndarray | None:
  """The first test image of each of the first `n` classes of the CIFAR-10 JPEG copy, uint8 [n, 32, 32, 3]."""
  path = data_root() / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
  if not path.is_file():
    return None
  images: dict[str, np.ndarray] = {}
  with tarfile.open(path, "r|gz") as tar:  # streamed: the test split comes first
    for member in tar:
      parts = member.name.split("/")
      if member.isfile() and parts[1] == "test" and parts[2] not in images:
        images[parts[2]] = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
        if len(images) == n:
          break
  return np.stack(list(images.values()))
