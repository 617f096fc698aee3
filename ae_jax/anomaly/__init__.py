"""Anomaly detection from reconstruction errors: scores and thresholds (`scores`), error vectors
(`reconstruction`), the procedure for trained models (`detect`) and its plots (`plot`). Discords after a
normal prefix, the UCR anomaly archive's protocol: its file format and scoring rule (`ucr`), nearest-window
distances and the matrix profile (`matrix_profile`), a window autoencoder trained on the prefix
(`window_ae`) and the detector that combines them (`prefix_detector`)."""

from ae_jax.anomaly.detect import AnomalyReport, check_options, detect, threshold_and_test, top_discords
from ae_jax.anomaly.reconstruction import (
  UnitErrors,
  WindowErrors,
  point_errors,
  position_scale,
  sequence_scores,
  unit_errors,
  window_errors,
)
from ae_jax.anomaly.scores import (
  SCORES,
  Gaussian,
  best_threshold,
  fbeta_from_counts,
  fit_gaussian,
  mahalanobis,
  neg_log_density,
  precision_recall_fbeta,
  roc_auc,
)

__all__ = [
  "SCORES",
  "AnomalyReport",
  "Gaussian",
  "UnitErrors",
  "WindowErrors",
  "best_threshold",
  "check_options",
  "detect",
  "fbeta_from_counts",
  "fit_gaussian",
  "mahalanobis",
  "neg_log_density",
  "point_errors",
  "position_scale",
  "precision_recall_fbeta",
  "roc_auc",
  "sequence_scores",
  "threshold_and_test",
  "top_discords",
  "unit_errors",
  "window_errors",
]
