"""The OUTPUT folder of a train run: claimed before training, saved at the end.

OUTPUT holds the adapter/model and tokenizer, ``config.yaml`` (resolved),
``metrics.jsonl``, TensorBoard logs in ``runs/``, ``data_report.json``,
``divtune_base.json`` (the base model spec, so the adapter reloads anywhere),
``checkpoint-*`` folders for ``--resume``, and a done marker written last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from divtune.config import ConfigError
from divtune.models import make_adapter_portable, write_base_spec
from divtune.outputs import claim_output_dir, stamped

if TYPE_CHECKING:
    from divtune.train.config import TrainConfig

logger = logging.getLogger(__name__)

DATA_REPORT_FILE = "data_report.json"
#: Whether the reference log-probs came from the on-disk cache, and its key.
REF_CACHE_FILE = "ref_logps.json"
#: Whether the frozen-prefix hidden-state cache was used (or why not), its keys and hits.
PREFIX_CACHE_FILE = "prefix_cache.json"
#: The adapter name of TRL's frozen reference copy (left out of the saved model).
REF_ADAPTER = "ref"


#: Settings that change how fast a run goes, not what it computes (the frozen-prefix cache
#: gives the same losses to float32 rounding, tests/test_prefix_cache.py): left out of the
#: settings a finished run is recognised by, so switching them, or upgrading divtune to a
#: version that has them, neither refuses nor redoes a finished run.
SPEED_ONLY_SETTINGS = ("prefix_cache", "prefix_cache_dir", "save_minutes")
#: Settings that do not change what a training run produces (left out of the reuse check).
UNRECORDED_SETTINGS = ("output", "resume", *SPEED_ONLY_SETTINGS)


def claim_train_output(cfg: "TrainConfig", overwrite: bool):
    """The output claim of a train run and the checkpoint to resume from (None: start fresh).

    Same settings and inputs, finished: reused. Unfinished: continued from its
    newest complete checkpoint with ``--resume`` (refused without it, so a
    half-trained run is never silently restarted). Other settings: refused
    unless ``overwrite``.
    """
    settings = {k: v for k, v in cfg.to_dict().items() if k not in UNRECORDED_SETTINGS}
    inputs = [cfg.data, cfg.init, cfg.model if Path(cfg.model).exists() else None]
    claim = claim_output_dir(cfg.output, "train", stamped(settings, inputs), overwrite)
    if claim.state != "continue":
        return claim, None
    output = Path(cfg.output)
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [c for c in checkpoints if (c / "trainer_state.json").is_file()]
    if not cfg.resume:
        if checkpoints:
            raise ConfigError(
                f"{output}: holds checkpoints of an unfinished train run; pass --resume to continue it, "
                "or --overwrite to start over"
            )
        return claim, None
    if not complete:
        logger.info("--resume: no checkpoint in %s yet, starting from scratch", output)
        return claim, None
    return claim, str(complete[-1])


def save_final(trainer, tokenizer, output: Path, base_spec: str) -> None:
    """Save the trained adapter/model (without TRL's frozen reference copy) where adapters reload anywhere."""
    from peft import PeftModel  # heavy

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel) and REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output)
        write_base_spec(output, base_spec)
        make_adapter_portable(output, base_spec)
