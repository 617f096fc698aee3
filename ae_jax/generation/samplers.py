"""Drawing images from a run that can generate, and scoring them: `experiments.sample` and the
`sample_quality` evaluator share these.

    run = stage_one.load_run("runs/prior_ar")
    drawn = draw(run, 10_000, seed=0, options=generate.SampleOptions(top_k=50))
    quality = score(drawn)

* A stage-two prior run (a "code_prior" model, trained on the `codes` dataset): codes from
  `priors.generate.sample_tokens`, decoded by its frozen stage one.
* An autoencoder run (the "autoencoding" ability) or a VAE: codes from a Gaussian mixture fitted on its
  training codes (`latent_prior="mixture"`, cached in WORKDIR/latent_priors) or from a VAE's prior N(0, I)
  (`latent_prior="normal"`), decoded by its decoder (`ae_jax.generation.latent`).
* A diffusion prior run (`diffusion_prior`, trained on the `latent_codes` of an autoencoder or VAE): codes
  from its ODE sampler with `options.steps` steps (`diffusion_sampler.sample_codes`), decoded by that stage
  one's decoder.

`write_samples` writes OUT/samples.npz and OUT/samples.png as one unit (`workdir.write_together`): both are
written to temporary files of their own first, then, under a lock on OUT, the earlier samples.png and
quality.json are removed and the new files renamed into place (a kill in between leaves at worst the .npz
without its PNG, never files of two runs side by side); both carry one sample id (the .npz's `sample_id`, the
PNG's text chunk "ae_jax.sample_id", quality.json's "sample_id"), so files of one write are recognisable as
such. A failed write (a full disk) leaves the earlier files as they were and no temporary file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ae_jax.core import workdir
from ae_jax.core.errors import ConfigError, WorkdirError
from ae_jax.generation import stage_one

log = logging.getLogger(__name__)

LATENT_PRIORS = ("mixture", "normal")


@dataclasses.dataclass(frozen=True)
class Drawn:
  """Generated images and how they were drawn.

  images: float32 [N, H, W, C] in the imitated run's model range (or [N, T, F] frames of a sequence model);
  labels: int32 [N], the classes of class-conditional samples (None for unconditional ones); arrays: what
  samples.npz keeps beside them (codes, options, fingerprints); source: the run whose dataset the samples
  imitate (a prior run's stage one, else the run itself); what: one line on how they were drawn."""

  images: np.ndarray
  labels: np.ndarray | None
  arrays: dict[str, Any]
  source: stage_one.Run
  what: str

  def to_unit(self, x: np.ndarray) -> np.ndarray:
    """Images in the source run's model range -> [0, 1] (for pictures)."""
    return stage_one.to_unit(self.source.config, x)

  def pictures(self, x: np.ndarray) -> np.ndarray:
    """Samples [n, ...] -> pictures [n, H, W, C] in [0, 1]: images as they are, other examples (frames of
    a sequence [n, T, F]) as the source run's dataset draws them (`DatasetInfo.to_image`)."""
    if x.ndim == 4:
      return self.to_unit(x)
    from ae_jax import data

    return data.get_dataset(self.source.config.data).info.to_image(x)


def is_prior_run(config: Any) -> bool:
  """Whether a run's config is a stage-two prior's (it trained on the `codes` dataset, or on the
  `latent_codes` of an autoencoder or VAE: a diffusion prior)."""
  return config.data.get("name") in ("codes", "latent_codes")


def quality_unavailable(data_config: Any) -> str | None:
  """Why samples imitating dataset `data_config` cannot be scored in a feature network's space (None: they
  can): its examples must be images [H, W, C] (a prior run's are its stage one's)."""
  from ae_jax import data

  if data_config.name == "codes":
    return None
  if data_config.name == "latent_codes":  # a diffusion prior's samples are its stage one's
    step = int(data_config.tokenizer_step) or None
    _, saved = stage_one.saved_config(data_config.tokenizer_workdir, step, data_config.tokenizer_best)
    data_config = saved.data
  shape = data.example_spec(data_config).shape
  if len(shape) == 3:
    return None
  return f"its examples have shape {list(shape)}, not images [H, W, C] (sample quality scores images)"


def check_latent_prior(
  config: Any, latent_prior: str | None, option: str = "--prior", workdir: str = "this"
) -> None:
  """ConfigError (one line) unless an autoencoder's or VAE's codes can be drawn from `latent_prior`:
  "mixture", or "normal" for a VAE (also when the model has no continuous code: `LatentCodec.is_vae`);
  `option` names the setting and `workdir` the run in the messages."""
  from ae_jax.generation import latent

  name = config.model.name
  vae = latent.LatentCodec.is_vae(name, workdir)
  if latent_prior == "diffusion":
    from ae_jax.generation import diffusion_sampler

    raise ConfigError(diffusion_sampler.train_one_first(workdir, option))
  if latent_prior not in LATENT_PRIORS:
    raise ConfigError(
      f"{workdir} is a '{name}' run: choose how its codes are drawn with {option}=mixture (a Gaussian "
      "mixture fitted on its training codes)"
      + (f" or {option}=normal (its prior N(0, I))" if vae else "")
      + (f", not {latent_prior!r}" if latent_prior is not None else "")
    )
  if latent_prior == "normal" and not vae:
    raise ConfigError(
      f"{option}=normal samples a VAE's prior N(0, I); a '{name}' run's codes have no prior (only a VAE has "
      f"the prior 'normal'): use {option}=mixture"
    )


def draw(
  run: stage_one.Run,
  num: int,
  *,
  seed: int = 0,
  options: Any = None,
  per_device: int = 16,
  latent_prior: str | None = None,
  components: int = 10,
  covariance: str = "full",
  progress: Callable[[int], None] | None = None,
) -> Drawn:
  """`num` images from `run` (module docstring), deterministic for `seed`. `options`: a prior run's
  `generate.SampleOptions` (default: plain sampling); `latent_prior`, `components`, `covariance`: how an
  autoencoder's or VAE's codes are drawn. ConfigError (one line) for what this run cannot do."""
  if num < 1:
    raise ConfigError(f"the number of samples must be >= 1, got {num}")
  if is_prior_run(run.config):
    from ae_jax.generation import diffusion_sampler

    diffusion = diffusion_sampler.is_diffusion_run(run.config)
    if latent_prior is not None and not (diffusion and latent_prior == "diffusion"):
      raise ConfigError(
        f"a latent prior ('{latent_prior}') is for autoencoder and VAE runs; {run.workdir} is a prior run"
      )
    if diffusion:
      return _draw_diffusion(run, num, seed, options, progress)
    return _draw_tokens(run, num, seed, options, per_device, progress)
  return _draw_latents(run, num, seed, latent_prior, components, covariance)


def _draw_tokens(run, num, seed, options, per_device, progress) -> Drawn:
  from ae_jax.generation import generate

  options = options or generate.SampleOptions()
  generate.check_options(run, options, num)
  tokenizer = generate.tokenizer_of(run)
  tokens = generate.sample_tokens(
    run, num, seed=seed, options=options, per_device=per_device, progress=progress
  )
  codes = tokens.reshape(len(tokens), *tokenizer.layout.grid)
  labels = options.labels(np.arange(num), run.model.num_classes)
  arrays = dict(
    codes=codes,
    tokens=tokens,
    labels=labels,
    temperature=options.temperature,
    top_k=options.top_k,
    top_p=options.top_p,
    steps=options.steps,
    guidance=options.guidance,
    guidance_schedule=np.str_(options.guidance_schedule),
    prior_step=run.step,
    stage_one=np.str_(tokenizer.fingerprint),
  )
  what = f"prior step {run.step}, stage one {tokenizer.fingerprint}"
  conditional = labels if labels.min() >= 0 else None
  return Drawn(tokenizer.decode_codes(codes), conditional, arrays, tokenizer.run, what)


def _draw_diffusion(run, num, seed, options, progress) -> Drawn:
  from ae_jax.generation import diffusion_sampler, generate

  steps = (options or generate.SampleOptions()).steps
  codes, codec = diffusion_sampler.sample_codes(run, num, seed=seed, steps=steps, progress=progress)
  arrays = dict(codes=codes, steps=steps, prior_step=run.step, stage_one=np.str_(codec.run.fingerprint))
  what = f"diffusion prior step {run.step}, {steps} ODE steps, stage one {codec.run.fingerprint}"
  return Drawn(codec.decode(codes), None, arrays, codec.run, what)


def _draw_latents(run, num, seed, latent_prior, components, covariance) -> Drawn:
  from ae_jax.generation import latent

  check_latent_prior(run.config, latent_prior, workdir=run.workdir)
  codec = latent.LatentCodec.of(run)
  if latent_prior == "normal":
    codes = latent.standard_normal(codec, num, seed)
    what = "N(0, I)"
  else:
    mixture = latent.fit_mixture(codec, components, covariance=covariance, seed=seed)
    codes = latent.mixture_codes(codec, mixture, num, seed)
    what = f"a {components}-component {covariance} Gaussian mixture over the training codes"
  if codec.frames:
    what += f", {codec.frames_per_example} frames drawn independently"
  arrays = dict(codes=codes, prior=np.str_(latent_prior), run_step=run.step, run=np.str_(run.fingerprint))
  return Drawn(codec.decode(codes), None, arrays, run, f"codes from {what}")


def score(
  drawn: Drawn,
  *,
  feature_steps: int | None = None,
  feature_cache: str | None = None,
  reference_split: str = "test",
) -> dict[str, Any]:
  """Scores drawn images against as many images of the source run's `reference_split`, with the floor
  (as many training images against the same reference) and, for class-conditional samples, the feature
  network's accuracy on their classes (`ae_jax.metrics.sample_quality`). The feature network is the dataset's
  shipped one (`feature_network.settings_for`; `feature_steps` changes its training steps), trained once
  and cached (`feature_network.load_or_train`)."""
  from ae_jax import data
  from ae_jax.data.dataset import stack_examples
  from ae_jax.metrics import feature_network, sample_quality

  data_config = drawn.source.config.data
  why_not = quality_unavailable(data_config)
  if why_not is not None:
    raise ConfigError(f"cannot score samples of dataset '{data_config.name}': {why_not}")
  settings = feature_network.settings_for(data_config, feature_steps)
  net = feature_network.load_or_train(data_config, feature_cache, settings)
  dataset = data.get_dataset(data_config)
  reference, train = dataset.split(reference_split), dataset.split("train")
  n = min(len(drawn.images), len(reference), len(train))
  if n < len(drawn.images):
    log.info("sample quality: %d of the %d samples, as many as the reference split has", n, len(drawn.images))
  quality = sample_quality.sample_quality(
    drawn.images[:n],
    net,
    stack_examples(reference, dataset.info, range(n))["x"],
    train_reference=stack_examples(train, dataset.info, range(n))["x"],
    labels=None if drawn.labels is None else drawn.labels[:n],
  )
  quality["feature_network"] = net.describe()
  return quality


def describe(quality: dict[str, Any]) -> str:
  """One line of a `score` result."""
  return (
    f"Fréchet feature distance {quality['frechet_feature_distance']:.4g} (train-vs-test floor "
    f"{quality['floor_frechet_feature_distance']:.4g}), precision {quality['precision']:.3f}, recall "
    f"{quality['recall']:.3f}"
    + (f", class accuracy {quality['class_accuracy']:.3f}" if "class_accuracy" in quality else "")
  )


SAMPLES_NPZ, SAMPLES_PNG, QUALITY_JSON = "samples.npz", "samples.png", "quality.json"
PNG_ID_KEY = "ae_jax.sample_id"


@dataclasses.dataclass(frozen=True)
class SampleFiles:
  """The files `write_samples` wrote, and the id they share."""

  npz: str
  png: str
  sample_id: str


def _png_bytes(grid: np.ndarray, scale: int, sample_id: str) -> bytes:
  """A uint8 grid [H, W, C] as PNG, enlarged `scale` times, with the sample id in a text chunk."""
  from PIL import Image, PngImagePlugin

  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  info = PngImagePlugin.PngInfo()
  info.add_text(PNG_ID_KEY, sample_id)
  buffer = io.BytesIO()
  img.save(buffer, format="PNG", pnginfo=info)
  return buffer.getvalue()


def sample_ids(out: str) -> dict[str, str | None]:
  """{file name: its sample id (None: unreadable)} of the sample files in `out` (missing ones left out)."""
  from PIL import Image

  ids: dict[str, str | None] = {}
  npz, png = os.path.join(out, SAMPLES_NPZ), os.path.join(out, SAMPLES_PNG)
  if os.path.exists(npz):
    try:
      with np.load(npz) as f:
        ids[SAMPLES_NPZ] = str(f["sample_id"]) if "sample_id" in f.files else None
    except Exception:  # noqa: BLE001 - any unreadable file is reported as such
      ids[SAMPLES_NPZ] = None
  if os.path.exists(png):
    try:
      with Image.open(png) as img:
        ids[SAMPLES_PNG] = img.text.get(PNG_ID_KEY)
    except Exception:  # noqa: BLE001 - as above
      ids[SAMPLES_PNG] = None
  return ids


def _kept(out: str) -> str:
  ids = sample_ids(out)
  if not ids:
    return f"nothing was written to {out}"
  names = " and ".join(ids)
  known = {i for i in ids.values() if i}
  which = f" (sample id {known.pop()})" if len(known) == 1 else ""
  return f"{out} keeps the earlier {names}{which}"


def write_samples(out: str, arrays: dict[str, Any], grid: np.ndarray, *, scale: int = 3) -> SampleFiles:
  """Writes OUT/samples.npz (`arrays` and a new `sample_id`) and OUT/samples.png (the uint8 `grid`,
  enlarged `scale` times, with the same id) as one unit, removing an earlier OUT/quality.json (module
  docstring). WorkdirError (one line, saying what OUT keeps) when they cannot be written."""
  sample_id = uuid.uuid4().hex[:16]
  npz, png = os.path.join(out, SAMPLES_NPZ), os.path.join(out, SAMPLES_PNG)
  picture = _png_bytes(grid, scale, sample_id)
  try:
    workdir.write_together(
      {
        npz: lambda f: np.savez(f, sample_id=np.str_(sample_id), **arrays),
        png: lambda f: f.write(picture),
      },
      stale=[os.path.join(out, QUALITY_JSON)],
    )
  except OSError as e:
    raise WorkdirError(
      f"cannot write the samples to {out} ({e.strerror or e}); {_kept(out)}; free space or choose another "
      "--out and rerun"
    ) from None
  return SampleFiles(npz, png, sample_id)


def write_quality(out: str, quality: dict[str, Any], sample_id: str) -> str:
  """Writes OUT/quality.json (the `score` result of the samples `sample_id`) whole; returns its path.
  WorkdirError (one line) when it cannot be written; the samples stay."""
  path = os.path.join(out, QUALITY_JSON)
  text = json.dumps({**quality, "sample_id": sample_id}, indent=1, sort_keys=True)
  try:
    workdir.write_whole(path, lambda f: f.write(text.encode()))
  except OSError as e:
    raise WorkdirError(
      f"cannot write {path} ({e.strerror or e}); the samples (id {sample_id}) are kept in {out}"
    ) from None
  return path
