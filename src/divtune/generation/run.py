"""The ``divtune generate`` stage: check the prompts, the model and the output, then sample.

The output follows divtune.outputs' rule for single files (a file started with
other settings is refused unless ``overwrite``; one with the same settings is
resumed). Independent sampling runs on a backend (:mod:`~divtune.generation.hf`
or :mod:`~divtune.generation.vllm`); the other strategies
(:mod:`~divtune.generation.strategies`) on the HF sampler. Every run ends by
writing ``FILE.summary.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from divtune.config import ConfigError
from divtune.generation.config import SAMPLE_DEFINING_FIELDS, STRATEGY_FIELDS, GenerateConfig
from divtune.generation.hf import HFSampler, run_hf
from divtune.generation.plan import plan_batches
from divtune.generation.prompts import read_prompts
from divtune.generation.sample_file import count_summary, load_done, sample_key, summary_path
from divtune.generation.strategies.run import run_strategy
from divtune.generation.vllm import run_vllm
from divtune.io import InputError, write_json
from divtune.models import check_model_spec
from divtune.outputs import claim_output_file, sidecar_path
from divtune.stage_yield import verbalized_problem, verbalized_warning

logger = logging.getLogger(__name__)


def run_generate(cfg: GenerateConfig, stop_after_batches: int | None = None, overwrite: bool = False) -> Path:
    """Sample ``num_samples`` responses per prompt; returns the generations file.

    ``stop_after_batches`` stops after that many newly written batches (used to
    simulate an interrupted run in tests). The output follows divtune.outputs'
    rule for single files: nothing is written before the prompts and the model
    spec are checked; a file started with other settings is refused unless
    ``overwrite``; one with the same settings is resumed.
    """
    output = Path(cfg.output)
    if cfg.strategy != "independent" and cfg.backend != "hf":
        raise ConfigError(f"--strategy {cfg.strategy} runs on --backend hf only (vllm: independent sampling)")
    prompts = read_prompts(cfg.prompts, cfg.max_prompts, cfg.prompts_format, cfg.prompts_columns)
    check_model_spec(cfg.model)
    fields = list(SAMPLE_DEFINING_FIELDS)
    if cfg.strategy in STRATEGY_FIELDS:
        fields.append(STRATEGY_FIELDS[cfg.strategy])
    late = {name: GenerateConfig.model_fields[name].get_default(call_default_factory=True)
            for name in GenerateConfig.LATE_SETTINGS}
    state = claim_output_file(output, cfg.model_dump(mode="json"), fields, overwrite, defaults=late)
    if state == "replace":
        output.unlink()
    output.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(sidecar_path(output))
    if cfg.strategy != "independent":
        summary = run_strategy(cfg, prompts, output, HFSampler(cfg), stop_after_batches)
        write_json(summary_path(output), summary)
        check_strategy_yield(cfg, summary, output, finished=stop_after_batches is None)
        return output
    done = load_done(output)
    batches = plan_batches(len(prompts), cfg.num_samples, cfg.batch_size)
    todo = [
        (k, batch) for k, batch in enumerate(batches)
        if any(sample_key(prompts[p].prompt_id, s) not in done for p, s in batch)
    ]
    total = len(prompts) * cfg.num_samples
    logger.info("%d prompts x %d samples: %d already in %s, %d batches to run",
                len(prompts), cfg.num_samples, len(done), output, len(todo))
    if todo and cfg.backend == "vllm":
        run_vllm(cfg, prompts, done, output)
    elif todo:
        run_hf(cfg, prompts, todo, done, output, total, stop_after_batches)
    write_json(summary_path(output), count_summary(cfg, prompts, output))
    return output


def check_strategy_yield(cfg: GenerateConfig, summary: dict, output: Path, finished: bool = True) -> None:
    """Stop (InputError) when a verbalized run gave no sample at all; warn when some replies gave none."""
    if cfg.strategy != "verbalized" or not finished:
        return
    problem = verbalized_problem(summary)
    if problem:
        raise InputError(output, problem)
    warning = verbalized_warning(summary)
    if warning:
        logger.warning(warning)
