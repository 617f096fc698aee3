r"""LSTM autoencoders with the embedding front end on variable-length integer token sequences.

    python -m experiments.main --config experiments/configs/lstm_tokens_synthetic.py --workdir runs/tokens
    python -m experiments.main --config experiments/configs/lstm_tokens_synthetic.py:lstm_encdec_ad \
        --workdir runs/lstm_tokens_encdec

The argument picks the family (default lstm_ae_seq, the seq2seq-tutorial form: embedding, then an LSTM
whose whole output sequence is the code). Data: synthetic sticky random walks over a vocabulary of 32
tokens, lengths 16-32 padded to 32 with a prefix mask (ae_jax/data/shipped_series.py); the loss is the masked
softmax cross-entropy in nats per real token, and token_accuracy (weight 0) reports the share of real
tokens reconstructed exactly (argmax), as test/token_accuracy.
"""

import ml_collections

from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.runner.config import default_config

VOCAB, TIME = 32, 32
WIDTH = {
  "lstm_ae_seq": "hidden",
  "lstm_encdec_ad": "hidden",
  "lstm_ae_repeat": "units",
  "lstm_ae_stacked": "embedding_dim",
}
ARGS = tuple(WIDTH)  # the arguments the config sweep test checks


def get_config(model: str = "lstm_ae_seq"):
  if model not in WIDTH:
    raise ConfigError(f"lstm_tokens_synthetic.py:{model}: choose a family in {list(WIDTH)}")
  config = default_config()
  config.model = model_config(model, vocab_size=VOCAB, embed_dim=16, **{WIDTH[model]: 64})
  config.loss = ml_collections.ConfigDict({"token_xent": 1.0, "token_accuracy": 0.0})
  config.data = data_config("synthetic_sequences", vocab_size=VOCAB, time=TIME, num_train=4096, num_test=512)
  config.batch_size = 32
  config.eval_batch_size = 256
  config.total_steps = 1500
  config.optimizer.learning_rate = 2e-3
  config.optimizer.grad_clip_norm = 1.0
  config.log_every = 100
  config.evals.test.every = 500
  del config.evals["reconstructions"]  # token sequences are not drawn
  config.checkpoint_every = 500
  return config
