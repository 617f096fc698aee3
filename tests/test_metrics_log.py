"""metrics.jsonl bookkeeping: no empty rows, no row written twice on a rerun, and training rows that say
how many steps their means cover (fewer after a resume)."""

import json

import pytest

from ae_jax.runner import loop
from ae_jax.training import metrics_log


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_writer_skips_empty_rows_and_rows_already_written_at_the_resume_step(tmp_path):
  writer = metrics_log.MetricWriter(str(tmp_path), total_steps=8, start_step=0, show_progress=False)
  writer.advance(4)
  writer.write(4, {"loss": 1.0}, train_window=True)
  writer.write(4, {"test/loss": 2.0})
  writer.write(4, {})  # nothing to record
  writer.write(4, {"test/loss": 2.5})  # the same step and names again
  writer.close()
  assert _rows(tmp_path / "metrics.jsonl") == [
    {"step": 4, "loss": 1.0, "steps_averaged": 4.0},
    {"step": 4, "test/loss": 2.0},
  ]
  # a rerun resuming at step 4 writes the evaluation at step 4 again, and something new
  writer = metrics_log.MetricWriter(str(tmp_path), total_steps=8, start_step=4, show_progress=False)
  writer.write(4, {"test/loss": 2.0})
  writer.write(4, {"test/loss": 2.0, "test/mse": 3.0})  # other names: a new row
  writer.advance(3)
  writer.write(7, {"loss": 0.5}, train_window=True)
  writer.close()
  assert _rows(tmp_path / "metrics.jsonl")[2:] == [
    {"step": 4, "test/loss": 2.0, "test/mse": 3.0},
    {"step": 7, "loss": 0.5, "steps_averaged": 3.0},
  ]


@pytest.mark.training
def test_training_rows_count_their_steps_and_no_row_is_empty(tiny_config, tmp_path):
  """A 4-step run continued to 12 (log_every 3, checkpoints every 4): the row at 4 closes the short run
  (1 step), the first row after the resume averages steps 5-6 only (2), the others 3. With no periodic
  evaluator, nothing is logged for the end of either run beside the training rows."""
  tiny_config.update({"total_steps": 4, "log_every": 3, "checkpoint_every": 4})
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.total_steps = 12
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  rows = _rows(tmp_path / "metrics.jsonl")
  assert [(r["step"], r.get("steps_averaged")) for r in rows] == [(3, 3), (4, 1), (6, 2), (9, 3), (12, 3)]
  assert all("loss" in r for r in rows)


@pytest.mark.training
def test_rerunning_a_finished_run_adds_no_row(tiny_config, tmp_path):
  """The rerun restores the last checkpoint and evaluates it again: its periodic evaluation at the last
  step is in metrics.jsonl already, which stays as it was."""
  tiny_config.evals.test.every = 6
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  path = tmp_path / "metrics.jsonl"
  before = path.read_text()
  assert [r["step"] for r in _rows(path) if "test/loss" in r] == [6, 12]
  again = loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert again["step"] == 12 and "test/loss" in again["metrics"]
  assert path.read_text() == before
