"""Sample quality of generated images in the space of a feature network trained by ae-jax
(`ae_jax.metrics.feature_network`), not Inception's: the numbers are comparable between models scored with the
same network, not with published FIDs.

    net = feature_network.load_or_train(config.data)
    sample_quality(samples, net, test_images, train_reference=train_images, labels=classes)

Keys of the result (floats):
  frechet_feature_distance: Fréchet distance (FID's formula, `sample_metrics.frechet_distance`) between
    the samples' and the reference's features, in squared feature units;
  precision, recall: k-NN precision and recall (Kynkäänniemi et al. 2019, `sample_metrics.precision_recall`)
    of the samples against the reference, in [0, 1];
  floor_frechet_feature_distance (with train_reference): the same distance between two sets of real
    images (train_reference vs reference): what a perfect generator scores with this many examples;
  class_accuracy (with labels, the classes samples were conditioned on): the fraction of samples the
    feature network classifies as their class;
  num_samples, num_reference.

The Fréchet distance of finite sets is biased upward (roughly as 1/N) and noisy: compare models at one
number of samples, with a floor from as many real training images as samples.
"""

from __future__ import annotations

import logging

import numpy as np

from ae_jax.core.console import LOG_ONLY
from ae_jax.core.errors import DataError
from ae_jax.metrics.feature_network import FeatureNetwork
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance, precision_recall

log = logging.getLogger(__name__)


def sample_quality(
  samples: np.ndarray,
  net: FeatureNetwork,
  reference: np.ndarray,
  *,
  train_reference: np.ndarray | None = None,
  k: int = 3,
  labels: np.ndarray | None = None,
) -> dict[str, float]:
  """Scores generated images `samples` [N, H, W, C] against real images `reference` [M, H, W, C] (both in
  the value range of the config.data `net` was loaded for) in `net`'s feature space (module docstring).
  `train_reference` [M', H, W, C]: other real images (the training split) for the floor distance;
  `labels` int [N]: the classes the samples were conditioned on, for class_accuracy."""
  samples, reference = np.asarray(samples), np.asarray(reference)
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != samples.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
      raise DataError(
        f"sample_quality: labels must be integer class ids [N] = [{samples.shape[0]}], one per sample; got "
        f"{labels.dtype} {list(labels.shape)}"
      )
  log.info("sample quality in the space of %s", net.describe(), extra=LOG_ONLY)  # callers print the result
  sample_features, sample_logits = net.outputs(samples)
  reference_features = net.features(reference)
  mean, cov = feature_statistics(reference_features)
  result = {
    "frechet_feature_distance": frechet_distance(*feature_statistics(sample_features), mean, cov),
    **precision_recall(reference_features, sample_features, k=k),
    "num_samples": float(len(samples)),
    "num_reference": float(len(reference)),
  }
  if train_reference is not None:
    floor = feature_statistics(net.features(train_reference))
    result["floor_frechet_feature_distance"] = frechet_distance(*floor, mean, cov)
  if labels is not None:
    result["class_accuracy"] = float(np.mean(np.argmax(sample_logits, axis=1) == labels))
  return result
