"""``run_train``: prepared pairs + a base model -> a tuned adapter (or model) in OUTPUT.

The run, step by step: settle the device, claim OUTPUT (divtune.train.run_output),
read and fit the pairs, check the run's size, build TRL's config before the model
loads, load the policy (divtune.train.policy), build the trainer
(divtune.train.build), write the run's record, train and save. Online methods
dispatch to divtune.train.online.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from divtune import prepared
from divtune.config import ConfigError
from divtune.deprecations import quiet_checkpointing_rename
from divtune.io import write_json
from divtune.methods import METHODS
from divtune.train import data as pairs_data
from divtune.train import run_notices
from divtune.train.build import build_trainer, build_training_args
from divtune.train.config import TrainConfig, resolved_training
from divtune.train.devices import settle_device
from divtune.train.memory import check_training_memory
from divtune.train.policy import load_policy, policy_tokenizer
from divtune.train.probes import probe_datasets
from divtune.train.run_output import (
    DATA_REPORT_FILE, PREFIX_CACHE_FILE, REF_CACHE_FILE, claim_train_output, save_final,
)

logger = logging.getLogger(__name__)


@quiet_checkpointing_rename()  # PEFT/TRL read transformers' deprecated name (divtune/deprecations.py)
def run_train(
    cfg: TrainConfig, callbacks: list[Any] | None = None, *, overwrite: bool = False, memory_check: bool = True
) -> Path:
    """Train ``cfg.method`` and return the output folder. ``callbacks``: extra TrainerCallbacks.

    The output folder follows divtune.outputs' rule (``overwrite`` replaces a run
    with other settings). On CPU, ``memory_check`` refuses a run whose estimated
    peak memory exceeds what is available (divtune.train.memory).
    """
    if METHODS[cfg.method].online:
        from divtune.train.online import run_online_train  # heavy: loads numpy

        return run_online_train(cfg, overwrite=overwrite, memory_check=memory_check)
    if not cfg.data:
        raise ConfigError("train: `data` (prepared folder or pairs JSONL) is required")
    if not cfg.output:
        raise ConfigError("train: `output` folder is required")
    cfg, device = settle_device(cfg)
    output = Path(cfg.output)
    path = prepared.train_file(cfg.data)
    claim, resume_from = claim_train_output(cfg, overwrite)
    if claim.state == "reuse":
        logger.info("%s already holds a finished train run with these settings; reusing it", output)
        return output
    lost = run_notices.lost_steps_warning(output, resume_from)
    if lost:
        logger.warning(lost)
    pairs_data.check_pairs_kind(cfg.data, cfg.method)
    rows = prepared.read_pairs(path, cfg.method)
    tokenizer = policy_tokenizer(cfg)
    rows, report = fitted_pairs(cfg, path, rows, tokenizer)

    from datasets import Dataset  # heavy

    chat = pairs_data.has_chat_template(tokenizer)
    dataset = Dataset.from_list(pairs_data.to_trl_rows(rows, cfg.method, chat))
    probes = probe_datasets(cfg, rows, tokenizer, chat)
    check_run_size(cfg, device, len(dataset), memory_check)
    # TRL's config (TrainingArguments) first: creating it sets up the distributed state and, under
    # `accelerate launch` with DeepSpeed, the DeepSpeed config, so that the model load below runs
    # under ZeRO-3's partitioned init or FSDP's low-memory loading instead of as a whole copy per rank.
    args = build_training_args(cfg, device, len(dataset), probes)
    model, base_spec = load_policy(cfg, device, args)
    callbacks = [*(callbacks or []), *run_notices.save_by_time(cfg, device)]
    trainer = build_trainer(cfg, device, model, tokenizer, dataset, callbacks, probes, args=args)
    report.dropped_by_trainer = len(dataset) - len(trainer.train_dataset)
    if report.dropped_by_trainer:
        logger.warning("TRL dropped %d more pairs while tokenising (see %s)", report.dropped_by_trainer, DATA_REPORT_FILE)

    is_main = trainer.is_world_process_zero()
    if is_main:
        claim.begin()
        write_run_record(cfg, device, trainer, report, resume_from)
    trainer.train(resume_from_checkpoint=resume_from)
    save_final(trainer, tokenizer, output, base_spec)
    if is_main and getattr(trainer, "prefix_cache_record", None):
        write_json(output / PREFIX_CACHE_FILE, trainer.prefix_cache_record)  # now with the passes it served
    trainer.accelerator.wait_for_everyone()
    if is_main:
        claim.finish({"method": cfg.method, "global_step": trainer.state.global_step})
    return output


def fitted_pairs(
    cfg: TrainConfig, path: Path, rows: list[prepared.PairRow], tokenizer
) -> tuple[list[prepared.PairRow], pairs_data.DataReport]:
    """The pairs read from ``path`` that fit ``max_length``, and the report of what was read, dropped and cut."""
    report = pairs_data.DataReport(path=str(path), rows_read=len(rows))
    rows = pairs_data.fit_to_max_length(rows, tokenizer, cfg.max_length, report)
    if report.dropped_long_prompt:
        logger.warning(
            "dropped %d pairs whose prompt alone fills max_length=%d (see %s)",
            len(report.dropped_long_prompt), cfg.max_length, DATA_REPORT_FILE,
        )
    if report.truncated:
        logger.info("%d pairs are longer than max_length=%d and keep their start", report.truncated, cfg.max_length)
    return rows, report


def check_run_size(cfg: TrainConfig, device: str, n_pairs: int, memory_check: bool) -> None:
    """Refuse a CPU run that would not fit the memory (``memory_check``); warn of a run worth a second look."""
    if memory_check and device == "cpu":
        check_training_memory(cfg, int(resolved_training(cfg, device)["per_device_train_batch_size"]), logger)
    for notice in run_notices.length_warnings(cfg, device, n_pairs):
        logger.warning(notice)


def write_run_record(cfg: TrainConfig, device: str, trainer, report: pairs_data.DataReport, resume_from: str | None):
    """The resolved config.yaml, data_report.json and the caches' records; metrics.jsonl cut to the resumed step."""
    from divtune.train.callbacks import truncate_metrics  # heavy: loads transformers

    output = Path(cfg.output)
    resolved = cfg.model_copy(update={"training": resolved_training(cfg, device)})
    resolved.save(output / "config.yaml")
    write_json(output / DATA_REPORT_FILE, report.to_dict())
    if getattr(trainer, "ref_cache_record", None):
        write_json(output / REF_CACHE_FILE, trainer.ref_cache_record)
    if getattr(trainer, "prefix_cache_record", None):
        write_json(output / PREFIX_CACHE_FILE, trainer.prefix_cache_record)
    # Resumed: forget lines after the checkpoint (they are redone); started over: all of them.
    truncate_metrics(output, run_notices.checkpoint_step(resume_from) if resume_from is not None else -1)
