r"""LSTM autoencoders for anomaly detection (Malhotra et al. 2016, EncDec-AD): discord series and ECG5000.

    python -m experiments.main --workdir runs/ad_power \
        --config experiments/configs/lstm_anomaly.py:power_demand
    python -m experiments.main --workdir runs/ad_tek \
        --config experiments/configs/lstm_anomaly.py:space_shuttle
    python -m experiments.main --workdir runs/ad_ecg \
        --config experiments/configs/lstm_anomaly.py:ecg_qtdbsel102
    python -m experiments.main --workdir runs/ad_ecg5k \
        --config experiments/configs/lstm_anomaly.py:ecg5000

The argument is the data set, optionally followed by `,model=NAME` for another family (lstm_ae_repeat,
lstm_ae_stacked, lstm_ae_seq; default lstm_encdec_ad), e.g. `lstm_anomaly.py:ecg5000,model=lstm_ae_repeat`.
The model trains on normal windows only (train split); the trainer's "test" loss is that of the normal
fit split (vN1), and the state with the lowest one is kept (early stopping). After training,
`ae_jax.anomaly.detect` fits the error Gaussian on vN1, picks the threshold that maximises F0.1 on the
validation split and reports the test split's precision, recall, F0.1 and ROC-AUC, per point and per
sequence (consecutive windows: the paper's count), in results.json, with WORKDIR/anomalies.png (ECG5000:
per beat, with F1: beats are classified, 42% are anomalous).
Splits, windows and downsampling: ae_jax/data/timeseries.py.
Data: ../shared/data (or --config.data.root=DIR).
"""

from ae_jax.config import default_config
from ae_jax.data import timeseries
from ae_jax.models import model_config

# data set: (batch size, steps, LSTM width, anomaly options)
SETTINGS = {
  "power_demand": (32, 10_000, 64, {}),
  "space_shuttle": (16, 10_000, 64, {}),
  "ecg_qtdbsel102": (32, 6_000, 64, {"stride": 4}),
  "ecg5000": (16, 3_000, 64, {"beta": 1.0, "shrinkage": 1.0}),
}
# The width option of each family.
WIDTH = {
  "lstm_encdec_ad": "hidden",
  "lstm_ae_seq": "hidden",
  "lstm_ae_repeat": "units",
  "lstm_ae_stacked": "embedding_dim",
}


def get_config(arg: str = "power_demand"):
  name, *options = arg.split(",")
  options = dict(kv.split("=") for kv in options)
  model = options.pop("model", "lstm_encdec_ad")
  if options or name not in SETTINGS or model not in WIDTH:
    raise ValueError(
      f"lstm_anomaly.py:{arg}: use DATASET[,model=NAME] with DATASET in {list(SETTINGS)} and NAME in "
      f"{list(WIDTH)}"
    )
  batch, steps, width, anomaly_options = SETTINGS[name]
  config = default_config()
  config.model = model_config(model, **{WIDTH[model]: width})
  if model == "lstm_encdec_ad":
    # Free-running training: after the paper's teacher forcing (--config.model.teacher_forcing=True) the
    # decoder reconstructs far worse from its own outputs at inference (fit-split MSE with 2,000 / 1,500
    # steps at a constant rate: power demand 1.24 vs 0.107, space shuttle 1.92 vs 0.042).
    config.model.teacher_forcing = False
  config.loss.mse = 1.0
  config.data.name = name
  config.data.root = ""  # empty: $AE_JAX_DATA_ROOT, else ../shared/data beside the project
  if name in timeseries.DISCORDS:  # listed so that --config.data.window=... etc. can override them
    spec = timeseries.DISCORDS[name]
    config.data.window, config.data.stride, config.data.downsample = spec.window, spec.stride, spec.downsample
  config.batch_size = batch
  config.eval_batch_size = 256
  config.total_steps = steps
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.grad_clip_norm = 1.0
  config.log_every = 100
  config.eval_every = 500
  config.keep_best = "test/loss"  # early stopping on the normal fit split (vN1), as in the paper
  config.checkpoint_every = 1000
  config.anomaly.enabled = True
  config.anomaly.update(anomaly_options)
  return config
