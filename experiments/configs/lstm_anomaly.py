r"""LSTM autoencoders for anomaly detection (Malhotra et al. 2016, EncDec-AD): discord series and ECG5000.

    python -m experiments.main --workdir runs/ad_power \
        --config experiments/configs/lstm_anomaly.py:power_demand
    python -m experiments.main --workdir runs/ad_tek \
        --config experiments/configs/lstm_anomaly.py:space_shuttle
    python -m experiments.main --workdir runs/ad_ecg \
        --config experiments/configs/lstm_anomaly.py:ecg_qtdbsel102
    python -m experiments.main --workdir runs/ad_ecg5k \
        --config experiments/configs/lstm_anomaly.py:ecg5000
    python -m experiments.main --workdir runs/ad_mine --config experiments/configs/lstm_anomaly.py:series \
        --config.data.path=my_sensor.csv --config.data.columns=temperature --config.data.window=64 \
        --config.data.time_column=timestamp

`series` is your own series (`series_file`, ae_jax/data/series_file.py), scored unsupervised: trained on the
whole series with the 5% largest training errors left out of the loss after 1,000 steps, then the top
discords are reported. `series,mode=supervised` with --config.data.{train,validation,threshold,test}_ranges
follows the semi-supervised protocol below instead. `series,mode=prefix` with --config.data.train_end=N is
the UCR anomaly archive's protocol: the rows before N are normal and train the model (their last 20% are
the validation split: early stopping and the error model), only the rows after N are scored, and the
window is the dominant period of the prefix unless --config.data.window is given (results.json and
log.txt say which); --config.evals.anomaly.methods=mp,ae_latent adds ae-jax's prefix detectors (see
docs/anomaly.md) to the model's score.

    python -m experiments.main --workdir runs/ad_prefix \
        --config experiments/configs/lstm_anomaly.py:series,mode=prefix \
        --config.data.path=my_sensor.csv --config.data.columns=temperature --config.data.train_end=20000

The argument is the data set, optionally followed by `,model=NAME` for another family (lstm_ae_repeat,
lstm_ae_stacked, lstm_ae_seq; default lstm_encdec_ad), e.g. `lstm_anomaly.py:ecg5000,model=lstm_ae_repeat`.
The model trains on normal windows only (train split); the state with the lowest loss on the normal
validation split (vN1) is kept (early stopping). After training, `ae_jax.anomaly.detect` fits the error
Gaussian on vN1, picks the threshold that maximises F0.1 on the threshold split (vN2 + vA) and reports
the test split's precision, recall, F0.1 and ROC-AUC, per point and per sequence (consecutive windows:
the paper's count), in results.json, with WORKDIR/anomalies.png (ECG5000: per beat, with F1: beats are
classified, 42% are anomalous).
The data sets are series_file presets (files, windows, downsampling, ranges: ae_jax/data/shipped_series.py);
any of their options can be overridden, e.g. --config.data.window=100. Data: the data root
(--config.data.root, $AE_JAX_DATA, else ../shared/data).
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config, shipped_series
from ae_jax.models import model_config
from ae_jax.runner.config import default_config, parse_arg

# data set: (batch size, steps, LSTM width, anomaly options)
SETTINGS = {
  "power_demand": (32, 10_000, 64, {}),
  "space_shuttle": (16, 10_000, 64, {}),
  "ecg_qtdbsel102": (32, 6_000, 64, {"stride": 4}),
  "ecg5000": (16, 3_000, 64, {"beta": 1.0, "shrinkage": 1.0}),
  "series": (32, 5_000, 64, {"stride": 4}),
}
# The arguments the config sweep test checks: every data set, and every family on one of them.
ARGS = (*SETTINGS, *(f"power_demand,model={m}" for m in ("lstm_ae_seq", "lstm_ae_repeat", "lstm_ae_stacked")))
# (`series,mode=supervised` and `mode=prefix` need ranges or train_end, which the sweep test's stand-in
# file does not give)
# The width option of each family.
WIDTH = {
  "lstm_encdec_ad": "hidden",
  "lstm_ae_seq": "hidden",
  "lstm_ae_repeat": "units",
  "lstm_ae_stacked": "embedding_dim",
}


def get_config(arg: str = "power_demand"):
  args = parse_arg(arg, dataset="power_demand", model="lstm_encdec_ad", mode="unsupervised")
  name, model = args.dataset, args.model
  unsupervised = name == "series" and args.mode == "unsupervised"
  prefix = name == "series" and args.mode == "prefix"
  if name not in SETTINGS or model not in WIDTH or args.mode not in ("unsupervised", "supervised", "prefix"):
    raise ConfigError(
      f"lstm_anomaly.py:{arg}: use DATASET[,model=NAME][,mode=supervised|prefix] with DATASET in "
      f"{list(SETTINGS)} and NAME in {list(WIDTH)}"
    )
  if args.mode != "unsupervised" and name != "series":
    raise ConfigError(
      f"lstm_anomaly.py:{arg}: mode={args.mode} is for your own series ('series'); the presets have their "
      "protocol: drop ',mode=...'"
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
  if name == "series":  # your own series: set --config.data.path (and columns, window, labels, ranges)
    config.data = data_config("series_file", window=64, stride=4)
    if unsupervised:
      config.trim.update(fraction=0.05, after=1000)  # robust to the unlabelled anomalies it trains on
    if prefix:
      config.data.window = 0  # the dominant period of the normal prefix, unless given
  else:
    config.data = shipped_series.preset(name)  # a series_file config: files, columns, labels, window, ranges
  config.batch_size = batch
  config.eval_batch_size = 256
  config.total_steps = steps
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.grad_clip_norm = 1.0
  config.log_every = 100
  del config.evals["reconstructions"]  # series are drawn by the anomaly evaluator
  if unsupervised:
    del config.evals["test"]  # the whole series trains the model; the discords are the result
  else:  # early stopping on the normal validation split (vN1), as in the paper
    config.evals.validation = evaluators.section("losses", split="validation", every=500, baseline=False)
    if prefix:
      del config.evals["test"]  # the rows after the prefix are what the anomaly evaluator scores
    else:
      config.evals.test.update(every=0, baseline=False)
    config.keep_best = "validation/loss"
  config.checkpoint_every = 1000
  config.evals.anomaly = evaluators.section("anomaly", **anomaly_options)
  return config
