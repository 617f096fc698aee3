"""experiments.table: one markdown row per run, read from what the workdir holds."""

import json
import statistics

import pytest

from ae_jax.runner import loop
from experiments import table


@pytest.mark.training
def test_a_row_holds_the_results_and_the_derived_values(tiny_config, tmp_path):
  loop.train_and_evaluate(tiny_config, str(tmp_path / "run_a"))
  results = json.loads((tmp_path / "run_a" / "results.json").read_text())
  with open(tmp_path / "run_a" / "metrics.jsonl") as f:
    rates = [r["examples_per_sec"] for r in map(json.loads, f) if "examples_per_sec" in r]
  columns = table.parse_columns("MSE=test/mse,none=missing|test/loss,steps,ms/step=ms_per_step,bits")
  values = table.row_values(str(tmp_path / "run_a"), [key for _, key in columns])
  assert values["test/mse"] == results["test/mse"] and values["missing|test/loss"] == results["test/loss"]
  assert values["steps"] == 12 and values["bits"] is None  # not a quantized model
  assert values["ms_per_step"] == pytest.approx(statistics.median(1000 * 16 / r for r in rates))
  text = table.table([str(tmp_path / "run_a")], columns).splitlines()
  assert text[0] == "| run | MSE | none | steps | ms/step | bits |" and text[2].startswith("| run_a | ")
  assert text[2].endswith(" | – |")
  assert table.main([str(tmp_path / "nothing"), "--columns", "x"]) == 1


def test_evaluations_added_to_the_final_step_join_the_row_and_the_results_win(tmp_path):
  run = tmp_path / "run_b"
  run.mkdir()
  (run / "results.json").write_text(json.dumps({"step": 400, "test/mse": 0.5, "quality/psnr": 20.0}))
  (run / "eval_400.json").write_text(json.dumps({"step": 400, "lpips/lpips": 0.25, "test/mse": 9.0}))
  (run / "eval_300.json").write_text(json.dumps({"step": 300, "rfd/rfd": 7.0}))  # another step: not read
  values = table.row_values(str(run), ["test/mse", "lpips/lpips", "rfd/rfd"])
  assert values == {"test/mse": 0.5, "lpips/lpips": 0.25, "rfd/rfd": None}
