"""Issue 24.6: a killed CPU run loses minutes, not up to save_steps steps; a rerun that redoes steps
says which; a run far longer than intended says so before it starts."""

from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import pytest

from _train_support import make_pairs, read_metrics, tiny_overrides, write_pairs
from divtune.train import TrainConfig, run_train
from divtune.train.run_notices import (
    LONG_CPU_RUN_HOURS,
    MAX_SENSIBLE_EPOCHS,
    cpu_duration_warning,
    cpu_hours,
    epochs_warning,
    last_logged_step,
    length_warnings,
    planned_steps,
    restart_warning,
)
from divtune.train.save_by_time import SaveEveryMinutes, resolved_save_minutes, save_by_time_callbacks

RUNNER = "divtune.train.runner"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_checkpoint_is_asked_for_once_the_minutes_have_passed_since_the_last():
    clock = Clock()
    callback = SaveEveryMinutes(10, clock=clock)
    callback.on_train_begin(None, None, SimpleNamespace(should_save=False))
    clock.now = 9 * 60
    assert callback.on_step_end(None, None, SimpleNamespace(should_save=False)).should_save is False
    clock.now = 10 * 60
    assert callback.on_step_end(None, None, SimpleNamespace(should_save=False)).should_save is True
    callback.on_save(None, None, None)  # the checkpoint (or one by step) restarts the clock
    clock.now = 15 * 60
    assert callback.on_step_end(None, None, SimpleNamespace(should_save=False)).should_save is False


def test_time_based_saving_defaults_to_10_minutes_on_cpu_only():
    assert resolved_save_minutes(None, "cpu") == 10
    assert resolved_save_minutes(None, "cuda") == 0
    assert resolved_save_minutes(3, "cuda") == 3
    assert len(save_by_time_callbacks(10, "steps", world_size=1)) == 1
    assert save_by_time_callbacks(0, "steps", world_size=1) == []
    assert save_by_time_callbacks(10, "no", world_size=1) == []  # checkpoints turned off on purpose
    assert save_by_time_callbacks(10, "steps", world_size=2) == []  # one clock per process could disagree


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), make_pairs(8))


def _cfg(tiny_lm_dir, pairs_dir, output, **settings) -> TrainConfig:
    values = {"save_strategy": "steps", "save_steps": 1000, "max_steps": 3, "per_device_train_batch_size": 2,
              "gradient_accumulation_steps": 1, "save_total_limit": 5, **settings}
    return TrainConfig.load(None, tiny_overrides(**values), method="ddpo", data=str(pairs_dir),
                            model=str(tiny_lm_dir), output=str(output))


def _checkpoints(output) -> list[str]:
    return sorted(p.name for p in output.glob("checkpoint-*"))


@pytest.mark.parametrize("minutes, expected", [(1e-9, ["checkpoint-1", "checkpoint-2", "checkpoint-3"]),
                                              (0, ["checkpoint-3"])])
def test_a_real_run_checkpoints_by_time_between_save_steps(tiny_lm_dir, pairs_dir, tmp_path, minutes, expected):
    output = tmp_path / "run"
    run_train(_cfg(tiny_lm_dir, pairs_dir, output, save_minutes=minutes))
    # save_steps=1000 alone saves only at the last step; a due time adds one at every step here.
    assert _checkpoints(output) == expected


def _interrupted_run(tiny_lm_dir, pairs_dir, tmp_path):
    """A run that logged 4 steps and checkpointed at 2 and 4, then lost its end (the kill)."""
    output = tmp_path / "run"
    cfg = _cfg(tiny_lm_dir, pairs_dir, output, max_steps=4, save_steps=2, save_minutes=0)
    run_train(cfg)
    (output / ".divtune-done.json").unlink()
    return cfg, output


def test_resuming_from_an_earlier_step_than_the_run_reached_says_which_steps_are_redone(
        tiny_lm_dir, pairs_dir, tmp_path, caplog):
    cfg, output = _interrupted_run(tiny_lm_dir, pairs_dir, tmp_path)
    shutil.rmtree(output / "checkpoint-4")  # killed while writing its last checkpoint
    with caplog.at_level(logging.WARNING, logger=RUNNER):
        run_train(cfg.model_copy(update={"resume": True}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == RUNNER]
    assert f"{output}: resuming from step 2 (checkpoint-2); the interrupted run had reached step 4, " \
           "so steps 3-4 are trained again" in warnings
    assert [m["step"] for m in read_metrics(output) if "loss" in m] == [1, 2, 3, 4]  # steps 3-4 logged once


def test_starting_over_says_which_step_was_lost(tiny_lm_dir, pairs_dir, tmp_path, caplog):
    cfg, output = _interrupted_run(tiny_lm_dir, pairs_dir, tmp_path)
    for checkpoint in output.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # killed before its first checkpoint
    with caplog.at_level(logging.WARNING, logger=RUNNER):
        run_train(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == RUNNER]
    assert f"{output}: starting over at step 0; the interrupted run had reached step 4 and left no checkpoint " \
           "to resume from" in warnings
    assert [m["step"] for m in read_metrics(output) if "loss" in m] == [1, 2, 3, 4]  # the old lines are gone


def test_resuming_from_the_last_step_reached_says_nothing(tmp_path):
    assert restart_warning(tmp_path, reached=4, resume_step=4) is None
    assert restart_warning(tmp_path, reached=None, resume_step=None) is None


def test_the_last_logged_step_skips_a_line_cut_by_the_kill(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 9, "lo')
    assert last_logged_step(tmp_path) == 3
    assert last_logged_step(tmp_path / "nothing") is None


def test_max_steps_far_beyond_the_data_warns_with_the_epochs():
    steps, epochs = planned_steps(n_pairs=48, per_step_pairs=8, max_steps=100_000, epochs=3)
    assert (steps, round(epochs)) == (100_000, 16_667)
    message = epochs_warning(48, steps, epochs, 8)
    assert message.startswith("100,000 steps of 8 pairs on 48 pairs is 16,667 epochs (more than 50)")
    assert planned_steps(48, 8, -1, 3) == (18, 3.0)  # epochs when max_steps is unset
    assert epochs_warning(48, 300, MAX_SENSIBLE_EPOCHS, 8) is None


def test_a_cpu_run_of_many_hours_warns_with_its_estimate():
    # The constant is the issue's own measurement: 100 default steps (2,048 tokens each) of SmolLM2-135M in ~22 min.
    assert cpu_hours(100, 2048, 135_000_000) * 60 == pytest.approx(22, rel=0.05)
    assert cpu_duration_warning(100, 2048, 135_000_000) is None
    long_run = cpu_duration_warning(2000, 2048, 135_000_000)
    assert long_run.startswith("this CPU run may take about 7.3 h (2,000 steps x up to 2,048 tokens, 135M parameters")
    assert cpu_hours(2000, 2048, 135_000_000) > LONG_CPU_RUN_HOURS


def test_the_runner_warns_before_loading_the_model(tiny_lm_dir, pairs_dir, tmp_path):
    cfg = _cfg(tiny_lm_dir, pairs_dir, tmp_path / "run", max_steps=100_000, per_device_train_batch_size=2,
               gradient_accumulation_steps=4)
    (notice,) = length_warnings(cfg.model_copy(update={"max_length": 128}), "cpu", 48)
    assert notice.startswith("100,000 steps of 8 pairs on 48 pairs is 16,667 epochs")
