"""Training diagnostics: curve summaries, weight distributions and the files they write."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from divtune.reporting.diagnostics import FILES, run_diagnostics
from divtune.reporting.pair_weights import weight_summary
from divtune.reporting.training_logs import edge_means, read_training_log, running_mean, training_summary
from divtune.io import InputError, write_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_running_mean_is_trailing_and_skips_missing_steps():
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(running_mean(values, 2), [1.0, 2.0, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(running_mean(values, 1)[[0, 1, 3]], [1.0, 3.0, 5.0])
    assert math.isnan(running_mean(values, 1)[2])
    with pytest.raises(ValueError):
        running_mean(values, 0)


def test_edge_means_and_training_summary():
    assert edge_means(np.array([np.nan, 1.0, 2.0, 3.0, 10.0]), 2) == (1.5, 6.5)
    assert all(math.isnan(v) for v in edge_means(np.array([np.nan]), 2))
    log = {
        "step": np.arange(1, 7, dtype=float),
        "loss": np.array([0.7, 0.7, 0.6, 0.5, 0.4, 0.3]),
        "rewards/margins": np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.5]),
        "rewards/accuracies": np.array([0.5, 0.5, 0.5, 1.0, 1.0, 1.0]),
    }
    s = training_summary(log, k=2)
    assert s["steps"] == 6
    assert s["loss"]["start"] == pytest.approx(0.7) and s["loss"]["end"] == pytest.approx(0.35)
    assert s["rewards/margins"]["end"] == pytest.approx(0.4)
    assert s["rewards/accuracies_end"] == pytest.approx(1.0)
    assert "reward" not in s  # not logged by this run


def test_weight_summary_by_hand():
    even = weight_summary(np.ones(4))
    assert even["effective_pairs"] == pytest.approx(4.0) and even["share_zero"] == 0.0 and even["std"] == 0.0
    concentrated = weight_summary(np.array([4.0, 0.0, 0.0, 0.0]))
    assert concentrated["effective_pairs"] == pytest.approx(1.0)
    assert concentrated["share_zero"] == 0.75 and concentrated["share_below_0.5"] == 0.75
    assert concentrated["mean"] == 1.0 and concentrated["max"] == 4.0 and concentrated["median"] == 0.0
    assert weight_summary(np.zeros(0)) == {"n": 0}
    assert weight_summary(np.zeros(3))["effective_pairs"] == 0.0


def test_read_training_log_orders_steps_and_marks_missing_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [
        {"step": 2, "loss": 0.5}, {"step": 1, "loss": 0.7, "rewards/margins": 0.1}, {"note": "no step"},
        {"step": 2, "train_loss": 0.6},  # the trainer's end-of-run summary: same step, merged
    ])
    log = read_training_log(path)
    np.testing.assert_array_equal(log["step"], [1.0, 2.0])
    np.testing.assert_array_equal(log["loss"], [0.7, 0.5])
    assert log["rewards/margins"][0] == 0.1 and math.isnan(log["rewards/margins"][1])
    assert math.isnan(log["train_loss"][0]) and log["train_loss"][1] == 0.6


def _experiment_folder(root, weights):
    for name, method, margins in (("dpo", "dpo", [0.0, 0.01, 0.02, 0.03]), ("ddpo", "ddpo", [0.0, 0.1, 0.2, 0.4])):
        run = root / "models" / name
        write_jsonl(run / "metrics.jsonl", [
            {"step": i + 1, "loss": 0.69 - 0.05 * i, "rewards/margins": m, "rewards/accuracies": 0.5} for i, m in enumerate(margins)
        ])
        (run / "config.yaml").write_text(f"method: {method}\ndata: {root}/data/both\n")
    write_jsonl(root / "data" / "both" / "train.jsonl", [{"chosen": "a", "rejected": "b", "weight": w} for w in weights])


def test_run_diagnostics_writes_tables_and_plots(tmp_path):
    _experiment_folder(tmp_path, [0.0, 0.5, 1.0, 2.5])
    write_jsonl(tmp_path / "data" / "unused" / "train.jsonl", [{"chosen": "a", "rejected": "b", "weight": 9.0}])
    md_path = run_diagnostics(tmp_path, tmp_path / "diag", window=2)
    for name in FILES:
        assert (tmp_path / "diag" / name).is_file(), name
    for png in ("training_curves.png", "weights.png"):
        assert (tmp_path / "diag" / png).read_bytes().startswith(PNG_MAGIC)
    summary = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert set(summary["weights"]) == {"both"}  # "unused" holds no run's training data
    assert summary["runs"]["ddpo"]["method"] == "ddpo" and summary["runs"]["ddpo"]["data"] == "both"
    assert summary["runs"]["ddpo"]["rewards/margins"]["end"] == pytest.approx(0.3)
    assert summary["weights"]["both"]["n"] == 4 and summary["weights"]["both"]["share_zero"] == 0.25
    md = md_path.read_text()
    assert "| ddpo | ddpo | both | 4 | 0.665 → 0.565 | 0.050 → 0.300 | 0.500 | n/a → n/a |" in md
    assert "| both | 4 | 1.000 |" in md


def test_run_diagnostics_names_bad_input(tmp_path):
    with pytest.raises(InputError, match="not an experiment folder"):
        run_diagnostics(tmp_path, tmp_path / "diag")
    _experiment_folder(tmp_path, [1.0, "heavy"])
    with pytest.raises(InputError, match=r"train\.jsonl.*line 2.*weight"):
        run_diagnostics(tmp_path, tmp_path / "diag")


def test_diagnostics_cli(tmp_path):
    from typer.testing import CliRunner

    from divtune.cli import app

    _experiment_folder(tmp_path, [1.0, 1.0])
    result = CliRunner().invoke(app, ["diagnostics", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "diagnostics" / "diagnostics.md").is_file()


def test_probe_summary_and_the_moved_threshold():
    from divtune.reporting.training_logs import MOVED_ACCURACY, MOVED_MARGIN, probe_summary

    nan = float("nan")
    log = {
        "step": np.array([0.0, 1, 2, 3, 4]),
        "eval_train_probe_rewards/accuracies": np.array([0.5, nan, 0.6, nan, MOVED_ACCURACY]),
        "eval_train_probe_rewards/margins": np.array([0.0, nan, 0.05, nan, MOVED_MARGIN]),
        "eval_train_probe_logps/change": np.array([0.0, nan, -1.0, nan, -2.0]),
        "eval_heldout_rewards/accuracies": np.array([0.5, nan, 0.4, nan, 0.45]),
        "eval_heldout_rewards/margins": np.array([0.0, nan, -0.01, nan, -0.02]),
    }
    out = probe_summary(log)
    assert out["train_probe"]["accuracy"] == {"start": 0.5, "end": MOVED_ACCURACY}
    assert out["train_probe"]["logps_change"]["end"] == -2.0
    assert out["heldout"]["margin"]["end"] == -0.02 and out["heldout"]["logps_change"] is None
    assert out["moved"] is True  # the thresholds are inclusive
    log["eval_train_probe_rewards/margins"][-1] = MOVED_MARGIN - 0.01
    assert probe_summary(log)["moved"] is False
    assert probe_summary({"step": np.array([0.0])})["moved"] is None  # no probe logged


def test_weights_by_mode_of_the_chosen_response(tmp_path):
    from divtune.reporting.pair_weights import read_chosen_weights, weights_by_mode

    path = tmp_path / "train.jsonl"
    rows = [
        {"chosen": '"Hi," she said.', "weight": 0.5},
        {"chosen": "“Bye.”", "weight": 1.5},
        {"chosen": [{"role": "assistant", "content": "I ran."}], "weight": 2.0},
        {"chosen": "The end.", "weight": 0.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = weights_by_mode(read_chosen_weights(path))
    assert out["dialogue"] == {"n": 2, "mean": 1.0}
    assert out["first_person"] == {"n": 1, "mean": 2.0} and out["other"] == {"n": 1, "mean": 0.0}
    assert out["second_person"]["n"] == 0 and np.isnan(out["second_person"]["mean"])
