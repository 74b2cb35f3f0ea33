"""Experiments: the whole pipeline (prepare → reward model → train each system
→ generate → evaluate → report) composed from the stage functions, stage by
stage, resumable.

Every stage writes into its own folder under the experiment's output and is
marked done (with a hash of its resolved config) only after it finished, so a
rerun skips finished stages, redoes a stage whose config changed, and redoes a
stage that was killed halfway (training resumes from its last checkpoint and
generation from its last written sample, by those stages' own resume logic).
``divtune quickstart`` is a small built-in experiment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional

from pydantic import Field

from divtune.config import ConfigError, StageConfig, deep_merge
from divtune.io import clear_stage_done, mark_stage_done, read_stage_done, write_json
from divtune.io import RUN_MARKER, read_run_marker, run_kind
from divtune.methods import BASE, METHODS, SystemMethod
from divtune.outputs import adopt_folder

#: Methods trained from preference pairs; ``base`` is the untouched model.


class SystemSpec(StageConfig):
    """One row of the comparison: a model produced by one method."""

    name: str
    method: SystemMethod
    #: Which prepared data variant (a key of ``ExperimentConfig.data``) it trains on.
    data: str = "both"
    #: Name of another system whose trained output this one starts from (e.g. an SFT system).
    init: Optional[str] = None
    #: TrainConfig overrides for this system only (merged over ``ExperimentConfig.train``).
    train: dict[str, Any] = Field(default_factory=dict)
    #: System the report compares this one with (default: the experiment's ``baseline``),
    #: e.g. DDPO on capped data against DPO on the same capped data.
    compare_to: Optional[str] = None
    #: GenerateConfig overrides for this system only (merged over ``ExperimentConfig.generate``),
    #: e.g. ``{strategy: iterative}`` for an inference-time baseline on the base model.
    generate: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(StageConfig):
    output: str = "runs/experiment"
    #: The policy's base model spec (hub id, folder, .gguf, or the shipped ``smollm2``).
    model: str = "smollm2"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seeds: list[int] = Field(default_factory=lambda: [0])
    #: Biased datasets built before prepare (``divtune typicality``): name → TypicalityConfig
    #: fields. A data variant reads one with ``inputs: ["typicality:NAME"]``.
    typicality: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: PrepareConfig fields shared by every data variant.
    prepare: dict[str, Any] = Field(default_factory=dict)
    #: Data variants: name → PrepareConfig overrides (e.g. which embedders weight the pairs).
    data: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"both": {}})
    #: Data variant whose test split gives the gold row and the prompts to sample.
    gold_data: str = "both"
    #: The split whose prompts are sampled and evaluated: ``test`` (held out), or ``train``
    #: to tune settings without ever looking at the test prompts.
    eval_split: Literal["test", "train"] = "test"
    #: RewardTrainConfig overrides; ``null`` skips the reward model (quality is then null).
    reward: Optional[dict[str, Any]] = Field(default_factory=dict)
    #: TrainConfig fields shared by every trained system.
    train: dict[str, Any] = Field(default_factory=dict)
    systems: list[SystemSpec] = Field(default_factory=list)
    #: GenerateConfig fields shared by every system.
    generate: dict[str, Any] = Field(default_factory=dict)
    #: EvaluateConfig fields.
    evaluate: dict[str, Any] = Field(default_factory=dict)
    #: System the report's paired differences are taken against.
    baseline: Optional[str] = "dpo"
    #: Difference-of-differences contrasts for the report: name → {system, baseline, system_control,
    #: baseline_control} (system names; with several seeds their runs are paired by seed), e.g. the
    #: b × method interaction. Written to the report's interactions.json (divtune.report).
    interactions: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: Stages run at once, each in its own process with cores/jobs threads (``--jobs``).
    jobs: int = Field(1, ge=1)
    #: A run sized to show the pipeline, not to measure anything (the quickstart): its report
    #: opens with a caveat giving its size and pointing at the recorded results.
    demonstration: bool = False

    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("demonstration",)


class Stage:
    """A named unit of work with an output folder and a done marker keyed by its config.

    ``after`` names the stages whose outputs it reads: with several jobs, a stage
    starts only once those are done.
    """

    def __init__(
        self, name: str, directory: Path, config: dict[str, Any], run: Callable[[], Any], after: tuple[str, ...] = ()
    ):
        self.name = name
        self.directory = directory
        self.config = config
        self.run = run
        self.after = tuple(after)

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def recorded_seconds(self) -> float:
        """Seconds the stage took when it last ran to completion (from its marker)."""
        record = read_stage_done(self.directory)
        return float(record.get("seconds", 0.0)) if record else 0.0

    def is_done(self) -> bool:
        record = read_stage_done(self.directory)
        return record is not None and record.get("fingerprint") == self.fingerprint


def _log(message: str) -> None:
    print(f"[divtune] {message}", file=sys.stderr, flush=True)


def run_stages(stages: list[Stage], fresh: bool = False) -> dict[str, float]:
    """Run stages in order, skipping those already done with the same config.

    Returns seconds spent per stage (0 for skipped ones).
    """
    timings: dict[str, float] = {}
    for position, stage in enumerate(stages, start=1):
        label = f"[{position}/{len(stages)}] {stage.name}"
        if fresh and stage.directory.exists():
            shutil.rmtree(stage.directory)
        if stage.is_done():
            _log(f"{label}: done already, reusing {stage.directory}")
            timings[stage.name] = 0.0
            continue
        # A stage without a valid marker was killed, never run, or run with
        # another config: clear the marker and run it again (training and
        # generation resume from their own checkpoints inside the folder;
        # the stages are called with overwrite=True: the folder is the experiment's).
        clear_stage_done(stage.directory)
        adopt_folder(stage.directory)
        _log(f"{label} → {stage.directory}")
        start = time.perf_counter()
        stage.run()
        timings[stage.name] = time.perf_counter() - start
        # Added to the stage's own marker (which names the stage and its settings), not in place of it.
        record = read_stage_done(stage.directory) or {}
        mark_stage_done(
            stage.directory,
            {**record, "fingerprint": stage.fingerprint, "seconds": timings[stage.name], "finished_at": time.time()},
        )
        _log(f"{label}: finished in {timings[stage.name]:.0f} s")
    return timings


def ready_stages(stages: list[Stage], done: set[str], started: set[str]) -> list[Stage]:
    """Stages not started yet whose ``after`` stages are all done, in list order."""
    return [s for s in stages if s.name not in started and all(d in done for d in s.after)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the ids a child's ``CUDA_VISIBLE_DEVICES`` takes.

    None where torch sees no CUDA device (whatever ``CUDA_VISIBLE_DEVICES`` says); else
    those listed in ``CUDA_VISIBLE_DEVICES`` when it is set, or ``0..n-1`` for the ``n``
    devices torch sees.
    """
    import os

    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = []
        for item in (d.strip() for d in listed.split(",")):
            if not item or item == "-1":
                break  # CUDA stops reading the list at an invalid entry
            ids.append(item)
        return ids[: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def partition_gpus(jobs: int, gpus: list[str], device: str = "auto") -> list[list[str]] | None:
    """The GPUs of each of ``jobs`` parallel workers, or None when the workers run without GPUs.

    Each worker gets its own ``len(gpus) // jobs`` devices (worker k: the k-th slice), so
    two stages never share a GPU's memory. Raises ConfigError (one line) when the GPUs
    cannot be split evenly among the jobs. ``device``: the experiment's ``device``
    (``cpu``: no GPUs are handed out).
    """
    if device == "cpu" or not gpus or jobs <= 1:
        return None
    if len(gpus) < jobs or len(gpus) % jobs:
        fits = [n for n in range(1, len(gpus) + 1) if len(gpus) % n == 0]
        raise ConfigError(
            f"--jobs {jobs} on {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({','.join(gpus)}): each parallel stage "
            f"needs GPUs of its own and {len(gpus)} do not split into {jobs} equal parts; use --jobs "
            f"{', '.join(map(str, fits[:-1]))}{' or ' if len(fits) > 1 else ''}{fits[-1]}, or device=cpu"
        )
    per_job = len(gpus) // jobs
    return [gpus[k * per_job:(k + 1) * per_job] for k in range(jobs)]


def run_stages_parallel(
    stages: list[Stage], config_path: Path, jobs: int, fresh: bool = False, threads: int | None = None,
    gpus: list[list[str]] | None = None,
) -> dict[str, float]:
    """Run stages in ``jobs`` worker processes at once, each stage when the stages it reads are done.

    Each worker is ``divtune experiment CONFIG --stage NAME`` on the resolved
    config, with ``threads`` torch threads (default: the cores divided among
    the jobs). Whether this pays off depends on the machine: on the 2-core CPU
    here, two one-thread trainings of SmolLM2 side by side ran at 0.65x the
    throughput of one two-thread training (benchmarks/bench_jobs.py measures
    it anywhere). A worker's log is ``<output>/logs/<stage>.log``. ``gpus`` (from
    :func:`partition_gpus`): one list of GPU ids per worker slot; a stage started in
    slot k sees only slot k's GPUs (``CUDA_VISIBLE_DEVICES``).
    Finished stages are reused exactly as in :func:`run_stages`. If a stage
    fails, running workers finish, nothing new starts, and the error names its log.
    """
    import os

    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    names = {s.name for s in stages}
    for stage in stages:
        unknown = [d for d in stage.after if d not in names]
        if unknown:
            raise ValueError(f"stage {stage.name!r} waits for unknown stages {unknown}")
    if fresh:
        for stage in stages:
            if stage.directory.exists():
                shutil.rmtree(stage.directory)
    log_dir = config_path.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    done: set[str] = set()
    for stage in stages:
        if stage.is_done():
            _log(f"{stage.name}: done already, reusing {stage.directory}")
            done.add(stage.name)
            timings[stage.name] = 0.0
    started = set(done)
    running: dict[str, tuple[Any, float, Path]] = {}
    free_slots = list(range(jobs))
    slot_of: dict[str, int] = {}
    failed: list[str] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), DIVTUNE_TORCH_THREADS=str(threads))
    try:
        while len(done) + len(failed) < len(stages):
            if not failed:
                for stage in ready_stages(stages, done, started)[: jobs - len(running)]:
                    log_path = log_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", stage.name) + ".log")
                    command = [sys.executable, "-m", "divtune", "experiment", str(config_path), "--stage", stage.name]
                    slot = slot_of[stage.name] = free_slots.pop(0)
                    stage_env = env if gpus is None else dict(env, CUDA_VISIBLE_DEVICES=",".join(gpus[slot]))
                    with open(log_path, "w") as log_file:
                        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=stage_env)
                    running[stage.name] = (process, time.perf_counter(), log_path)
                    started.add(stage.name)
                    on_gpus = "" if gpus is None else f", GPUs {','.join(gpus[slot])}"
                    _log(f"{stage.name} → {stage.directory} (worker {process.pid}{on_gpus}, log {log_path})")
            if not running:
                if failed:
                    break
                blocked = [s.name for s in stages if s.name not in started]
                raise RuntimeError(f"stages {blocked} wait for stages that never finish; check their `after`")
            time.sleep(0.5)
            for name, (process, start, log_path) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                free_slots.append(slot_of.pop(name))
                free_slots.sort()
                stage = next(s for s in stages if s.name == name)
                if process.returncode == 0 and stage.is_done():
                    done.add(name)
                    timings[name] = time.perf_counter() - start
                    _log(f"{name}: finished in {timings[name]:.0f} s")
                else:
                    failed.append(name)
                    _log(f"{name}: FAILED (exit {process.returncode}); see {log_path}")
    except BaseException:
        # Stopped (SIGTERM, Ctrl-C): the workers stop too instead of running on unwatched.
        for process, _, _ in running.values():
            process.terminate()
        for process, _, _ in running.values():
            process.wait(timeout=30)
        raise
    if failed:
        raise RuntimeError(f"stages failed: {', '.join(failed)}; see their logs in {log_dir}")
    return timings


def _system_label(system: SystemSpec, seed: int, n_seeds: int) -> str:
    return system.name if n_seeds == 1 else f"{system.name}-s{seed}"


def report_comparisons(cfg: ExperimentConfig) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """What the report compares: (system label → baseline label, pooled name → per-seed labels).

    With one seed and no ``compare_to``, ``(None, None)``: the report compares every
    system with ``baseline``. Otherwise each run is paired with its baseline's run
    of the same seed, and with several seeds each system is also pooled over seeds
    and compared, pooled, with its pooled baseline. The human gold row is compared
    with the (pooled) experiment baseline.
    """
    names = [s.name for s in cfg.systems]
    for system in cfg.systems:
        if system.compare_to is not None and system.compare_to not in names:
            raise ValueError(f"system {system.name!r}: compare_to {system.compare_to!r} is not one of {names}")
        if system.compare_to == system.name:
            raise ValueError(f"system {system.name!r} cannot be compared with itself")
    if cfg.baseline is not None and cfg.baseline not in names:
        raise ValueError(f"baseline {cfg.baseline!r} is not one of the systems {names}")
    n_seeds = len(cfg.seeds)
    if n_seeds == 1 and all(s.compare_to is None for s in cfg.systems):
        return None, None
    comparisons: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    by_name = {s.name: s for s in cfg.systems}
    for system in cfg.systems:
        target = system.compare_to or cfg.baseline
        runs = [_system_label(system, seed, n_seeds) for seed in cfg.seeds]
        if n_seeds > 1:
            groups[system.name] = runs
        if target is None or target == system.name:
            continue
        if n_seeds > 1:  # the pooled column first, then one per seed
            comparisons[system.name] = target
        for seed, run in zip(cfg.seeds, runs):
            comparisons[run] = _system_label(by_name[target], seed, n_seeds)
    if cfg.baseline is not None:
        from divtune.evaluate import GOLD, GOLD_MATCHED

        comparisons[GOLD] = cfg.baseline
        if cfg.evaluate.get("gold_matched"):
            comparisons[GOLD_MATCHED] = cfg.baseline
    return comparisons, (groups or None)


def report_interactions(cfg: ExperimentConfig) -> dict[str, dict[str, str]]:
    """The experiment's ``interactions`` as the report takes them; refuses unknown systems and incomplete terms."""
    from divtune.report import INTERACTION_TERMS

    by_name = {s.name: s for s in cfg.systems}
    out: dict[str, dict[str, str]] = {}
    for name, terms in cfg.interactions.items():
        if not isinstance(terms, dict) or sorted(terms) != sorted(INTERACTION_TERMS):
            raise ValueError(f"interaction {name!r}: give exactly {', '.join(INTERACTION_TERMS)}")
        unknown = [v for v in terms.values() if v not in by_name]
        if unknown:
            raise ValueError(f"interaction {name!r}: {unknown[0]!r} is not one of the systems {sorted(by_name)}")
        # One seed: the run is called by the system's name; several: the pooled system is.
        out[name] = {t: terms[t] for t in INTERACTION_TERMS}
    return out


def build_stages(cfg: ExperimentConfig) -> tuple[list[Stage], dict[str, Path]]:
    """The experiment as an ordered list of stages, plus the paths of its key outputs."""
    from divtune.diagnostics import run_diagnostics
    from divtune.evaluate import EvaluateConfig, run_evaluate
    from divtune.generate import GenerateConfig, run_generate
    from divtune.prepare import PrepareConfig, run_prepare
    from divtune.report import run_report
    from divtune.reward_model import RewardTrainConfig, train_reward_model
    from divtune.train import TrainConfig, run_train
    from divtune.train.run_output import SPEED_ONLY_SETTINGS

    root = Path(cfg.output)
    device = None if cfg.device == "auto" else cfg.device
    stages: list[Stage] = []
    paths: dict[str, Path] = {}
    by_name = {system.name: system for system in cfg.systems}

    if cfg.gold_data not in cfg.data:
        raise ValueError(f"gold_data {cfg.gold_data!r} is not one of the data variants {sorted(cfg.data)}")
    built: dict[str, Path] = {}
    pair_keys: dict[str, str] = {}
    for name, fields in cfg.typicality.items():
        from divtune.typicality import POOLS_FILE, TypicalityConfig, run_typicality

        out = root / "typicality" / name
        tcfg = TypicalityConfig.from_dict(deep_merge({"inputs": ["shipped:wp_scored"]}, deep_merge(fields, {"output": str(out)})))
        stages.append(Stage(f"typicality {name}", out, tcfg.to_dict(), lambda tcfg=tcfg: run_typicality(tcfg, overwrite=True)))
        built[name] = out / POOLS_FILE
        paths[f"typicality/{name}"] = out
    for variant, overrides in cfg.data.items():
        out = root / "data" / variant
        fields = deep_merge(deep_merge(cfg.prepare, overrides), {"output": str(out)})
        reads = [spec[len("typicality:"):] for spec in fields.get("inputs", []) if spec.startswith("typicality:")]
        fields["inputs"] = [_resolve_built_input(spec, built, variant) for spec in fields.get("inputs", [])]
        prep = PrepareConfig.from_dict(fields)
        stages.append(Stage(
            f"prepare {variant}", out, prep.to_dict(), lambda prep=prep: run_prepare(prep, overwrite=True),
            after=tuple(f"typicality {name}" for name in reads),
        ))
        pair_keys[variant] = _pairs_key(prep)
        paths[f"data/{variant}"] = out
    gold_dir = paths[f"data/{cfg.gold_data}"]

    reward_dir: Path | None = None
    if cfg.reward is not None:
        reward_dir = root / "reward"
        rcfg = RewardTrainConfig.from_dict(
            deep_merge(cfg.reward, {"data": str(gold_dir), "output": str(reward_dir)})
        )
        stages.append(Stage(
            "reward model", reward_dir, rcfg.to_dict(), lambda rcfg=rcfg: train_reward_model(rcfg, overwrite=True),
            after=(f"prepare {cfg.gold_data}",),
        ))
        paths["reward"] = reward_dir

    generations: list[Path] = []
    generate_stages: list[str] = []
    train_stages: list[str] = []
    # The first DPO-family run on each set of pairs computes the reference log-probs
    # (cache); the other runs on those pairs start after it, so they read them.
    reference_leaders: dict[tuple, str] = {}
    n_seeds = len(cfg.seeds)
    for seed in cfg.seeds:
        trained: dict[str, Path] = {}
        for system in cfg.systems:
            label = _system_label(system, seed, n_seeds)
            model_spec: str = cfg.model
            if system.method != BASE:
                if system.data not in cfg.data:
                    raise ValueError(f"system {system.name!r} names unknown data variant {system.data!r}")
                out = root / "models" / label
                train_fields: dict[str, Any] = deep_merge(shared_train_for(system.method, cfg.train), system.train)
                train_fields = deep_merge(
                    train_fields,
                    {
                        "method": system.method,
                        "data": str(paths[f"data/{system.data}"]),
                        "model": cfg.model,
                        "output": str(out),
                        "seed": seed,
                        "resume": True,
                    },
                )
                if device:
                    train_fields["device"] = device
                if system.init:
                    if system.init not in trained:
                        raise ValueError(f"system {system.name!r}: init {system.init!r} must be listed before it")
                    train_fields["init"] = str(trained[system.init])
                if METHODS[system.method].online and reward_dir is not None:
                    train_fields["reward"] = str(reward_dir)
                tcfg = TrainConfig.from_dict(train_fields)
                fingerprint = {
                    k: v for k, v in tcfg.to_dict().items() if k not in SPEED_ONLY_SETTINGS
                } | {"resume": None}
                after = [f"prepare {system.data}"]
                if system.init:
                    after.append(f"train {_system_label(by_name[system.init], seed, n_seeds)}")
                if tcfg.precompute_ref and tcfg.ref_cache and METHODS[system.method].family == "dpo":
                    key = (pair_keys[system.data], tcfg.model, system.init, tcfg.max_length)
                    leader = reference_leaders.setdefault(key, f"train {label}")
                    if leader != f"train {label}":
                        after.append(leader)
                    sharing = sum(
                        1 for other in cfg.systems if METHODS[other.method].family == "dpo"
                        and pair_keys.get(other.data) == pair_keys[system.data] and other.init == system.init
                    ) * n_seeds
                    if tcfg.prefix_cache is None and sharing >= PREFIX_CACHE_MIN_RUNS:
                        # Speed only (not in the fingerprint): the fill is paid once for all these runs.
                        tcfg = tcfg.model_copy(update={"prefix_cache": True})
                stages.append(Stage(f"train {label}", out, fingerprint, lambda tcfg=tcfg: run_train(tcfg, overwrite=True), after=tuple(after)))
                train_stages.append(f"train {label}")
                trained[system.name] = out
                model_spec = str(out)
                paths[f"models/{label}"] = out
            gen_dir = root / "generations" / label
            gen_file = gen_dir / "generations.jsonl"
            gen_fields = deep_merge(
                deep_merge(cfg.generate, system.generate),
                {"model": model_spec, "prompts": str(gold_dir / f"{cfg.eval_split}.jsonl"), "output": str(gen_file),
                 "name": label, "seed": seed},
            )
            if device:
                gen_fields["device"] = device
            gcfg = GenerateConfig.from_dict(gen_fields)
            reads = f"train {label}" if system.method != BASE else f"prepare {cfg.gold_data}"
            stages.append(Stage(
                f"generate {label}", gen_dir, gcfg.to_dict(), lambda gcfg=gcfg: run_generate(gcfg, overwrite=True),
                after=(reads, f"prepare {cfg.gold_data}") if system.method != BASE else (reads,),
            ))
            generations.append(gen_file)
            generate_stages.append(f"generate {label}")

    eval_dir = root / "eval"
    eval_fields = deep_merge(
        cfg.evaluate,
        {
            "generations": [str(p) for p in generations],
            "output": str(eval_dir),
            "gold": str(gold_dir),
            "gold_split": cfg.eval_split,
            "reward": str(reward_dir) if reward_dir else None,
        },
    )
    ecfg = EvaluateConfig.from_dict(eval_fields)
    stages.append(Stage(
        "evaluate", eval_dir, ecfg.to_dict(), lambda ecfg=ecfg: run_evaluate(ecfg, overwrite=True),
        after=(*generate_stages, f"prepare {cfg.gold_data}", *(("reward model",) if reward_dir else ())),
    ))
    paths["eval"] = eval_dir

    report_dir = root / "report"
    baseline = cfg.baseline
    comparisons, seed_groups = report_comparisons(cfg)
    interactions = report_interactions(cfg)
    report_config = {
        "eval": str(eval_dir),
        "baseline": baseline,
        "comparisons": comparisons,
        "seed_groups": seed_groups,
        "after": ecfg.to_dict(),
    }
    if interactions:  # only when set: the reports of experiments without them keep their fingerprints
        report_config["interactions"] = interactions
    if cfg.demonstration:
        report_config["demonstration"] = True
    stages.append(
        Stage(
            "report",
            report_dir,
            report_config,
            lambda: run_report(
                [eval_dir], report_dir, baseline=baseline, comparisons=comparisons, seed_groups=seed_groups,
                overwrite=True, interactions=interactions or None,
                caveat=demonstration_caveat(cfg, eval_dir) if cfg.demonstration else None,
            ),
            after=("evaluate",),
        )
    )
    paths["report"] = report_dir

    # Training curves and weight distributions: the "why" behind the report's numbers.
    diagnostics_dir = root / "diagnostics"
    stages.append(
        Stage(
            "diagnostics",
            diagnostics_dir,
            {"root": str(root), "after": [s.fingerprint for s in stages if s.name.startswith(("prepare", "train"))]},
            lambda: run_diagnostics(root, diagnostics_dir, overwrite=True),
            after=tuple(s.name for s in stages if s.name.startswith(("prepare", "train"))),
        )
    )
    paths["diagnostics"] = diagnostics_dir
    return stages, paths


#: Auto frozen-prefix cache: on when at least this many DPO-family runs (systems x seeds) train on
#: the same pairs. Measured on SmolLM2, 4 pairs x 128 tokens (docs/results/benchmarks.md): filling
#: took 346 s and saved 1.1 s a step, so it pays back after about 300 steps; three runs of the
#: benchmarks' 96 steps.
PREFIX_CACHE_MIN_RUNS = 3


def _pairs_key(prep) -> str:
    """What decides a prepared variant's pairs (not its weights): variants with equal keys share pairs."""
    fields = prep.to_dict()
    for weight_only in ("output", "embedders", "weight_floor", "cache_dir", "show_progress", "embed_batch_size"):
        fields.pop(weight_only, None)
    return json.dumps(fields, sort_keys=True, default=str)


def _resolve_built_input(spec: str, built: dict[str, Path], variant: str) -> str:
    """``typicality:NAME`` → the pools file that builder writes; any other input as it is."""
    prefix = "typicality:"
    if not spec.startswith(prefix):
        return spec
    name = spec[len(prefix):]
    if name not in built:
        raise ValueError(f"data variant {variant!r} reads {spec!r}, but the typicality builders are {sorted(built)}")
    return str(built[name])


def environment_record() -> dict[str, Any]:
    """Versions, commit and machine: written beside every experiment's results."""
    import importlib.metadata as md

    versions = {}
    for package in ("divtune", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "sentence-transformers"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    import os

    return {
        "command": " ".join(sys.argv),
        "commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def demonstration_caveat(cfg: ExperimentConfig, eval_dir: Path) -> str:
    """What a demonstration-sized run is: how many steps of how many pairs, evaluated on how many prompts."""
    training = cfg.train.get("training") or {}
    steps = training.get("max_steps")
    pairs = int(training.get("per_device_train_batch_size", 1)) * int(training.get("gradient_accumulation_steps", 1))
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text(encoding="utf-8"))
    prompts = max((int(row.get("n_prompts") or 0) for row in metrics.values()), default=0)
    size = (f"each model trained {steps} steps of {pairs} pairs" if steps else "each model trained briefly")
    return (f"This is a demonstration of the pipeline, not evidence: {size} and is evaluated on {prompts} "
            "prompts, so its differences between systems are mostly noise and say nothing about the methods.")


def summary_table(metrics: dict[str, dict[str, Any]], keys: tuple[str, ...] = (
    "quality", "semantic_diversity", "style_diversity", "vendi_semantic", "distinct_2", "self_bleu"
), quality=None) -> str:
    """A plain-text table of the headline metrics, one row per system.

    ``quality`` (a divtune.quality_status.QualityStatus): when the report greys quality out,
    so does this table: its quality columns are marked † and its footnote follows the table.
    """
    from divtune.quality_status import MARK, QUALITY_KEYS

    greyed = quality is not None and quality.greyed
    header = ["system", *[f"{key} {MARK}" if greyed and key in QUALITY_KEYS else key for key in keys]]
    rows = [header]
    for system, values in metrics.items():
        row = [system]
        for key in keys:
            value = values.get(key)
            cell = "—" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"
            row.append(f"{cell} {MARK}" if greyed and key in QUALITY_KEYS and value is not None else cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
    return f"{table}\n{quality.footnote}" if greyed else table


#: What an experiment folder holds besides its marker (an older divtune wrote no marker).
EXPERIMENT_ENTRIES = (
    "config.yaml", "run.json", "logs", "typicality", "data", "reward", "models", "generations", "eval", "report",
    "diagnostics",
)


def shared_train_for(method: str, shared: dict[str, Any]) -> dict[str, Any]:
    """The experiment's shared ``train:`` block as it applies to a system of ``method``.

    A shared block serves systems of several methods: its probes and the ``training`` keys
    of one method's TRL config (e.g. DPO's ``precompute_ref_batch_size``) are left out for the
    methods that have no such setting, instead of failing their stage after the model loads.
    Set on a system's own ``train:`` block, a setting its method lacks is refused up front.
    """
    from divtune.train.config import PROBE_SETTINGS, method_field_names

    fitted = {k: v for k, v in shared.items() if METHODS[method].family == "dpo" or k not in PROBE_SETTINGS}
    if isinstance(shared.get("training"), dict):
        accepted = method_field_names(method)
        fitted["training"] = {k: v for k, v in shared["training"].items() if k in accepted}
    return fitted


def claim_experiment_dir(root: Path) -> None:
    """The output rule at the experiment level: its stages reuse what they can, stage by stage,
    but a non-empty folder that is not an experiment's is refused (its files are not divtune's)."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: is a file; the experiment's output must be a folder")
    entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not entries:
        return
    marker = read_run_marker(root)
    found = run_kind(root)
    if found is not None and found[0] not in ("experiment", None):
        kind, finished = found
        raise ConfigError(
            f"{root}: holds {'a finished' if finished else 'an unfinished'} {kind} run; "
            "an experiment needs its own output folder"
        )
    if marker is None and not (set(entries) - {RUN_MARKER}) <= set(EXPERIMENT_ENTRIES):
        foreign = sorted(set(entries) - set(EXPERIMENT_ENTRIES))
        raise ConfigError(
            f"{root}: not empty ({foreign[0]}{', ...' if len(foreign) > 1 else ''}) and holds no divtune experiment; "
            "divtune never overwrites files it did not write: choose a new or empty output folder"
        )


#: ``--check`` sizes: enough for every stage to run its real code path on the real data
#: (model and data loading, tokenisation, the trainer with its probes, steps and a
#: checkpoint, sampling, evaluation and the report), in minutes instead of hours.
CHECK_TRAINING = {"max_steps": 2, "save_steps": 1}
CHECK_GENERATE = {"num_samples": 2, "max_new_tokens": 8, "max_prompts": 2}
CHECK_EVALUATE = {"bootstrap": 20}
CHECK_REWARD = {"max_epochs": 1}
CHECK_PROBE_PAIRS = 4


def check_config(cfg: ExperimentConfig, output: str | None = None) -> ExperimentConfig:
    """``cfg`` shrunk for a check run: the first seed, 2 steps per training, 2 short samples for
    2 prompts, one reward epoch, into its own folder (``<output>-check`` unless given).

    Data preparation is not shrunk (its embeddings, like the reference log-probs, are cached on
    disk and reused by the full run). The frozen-prefix cache is off: its fill pays off over
    hundreds of steps, not two. Nothing in a check folder is a result.
    """
    from divtune.train.config import PROBE_PAIR_SETTINGS

    def small_train(block: dict[str, Any], shared: bool) -> dict[str, Any]:
        # The shared block, then what a system's own block sets again over it.
        fitted = deep_merge(block, {"training": CHECK_TRAINING}) if shared or "training" in block else dict(block)
        if shared or "prefix_cache" in block:
            fitted["prefix_cache"] = False
        if shared or "probe_steps" in block:
            fitted["probe_steps"] = 1
        for name in PROBE_PAIR_SETTINGS:
            if block.get(name):
                fitted[name] = min(int(block[name]), CHECK_PROBE_PAIRS)
        return fitted

    systems = [s.model_copy(update={"train": small_train(s.train, shared=False)}) for s in cfg.systems]
    return cfg.model_copy(update={
        "output": output or f"{cfg.output.rstrip('/')}-check",
        "seeds": cfg.seeds[:1],
        "train": small_train(cfg.train, shared=True),
        "systems": systems,
        "generate": deep_merge(cfg.generate, CHECK_GENERATE),
        "evaluate": deep_merge(cfg.evaluate, CHECK_EVALUATE),
        "reward": None if cfg.reward is None else deep_merge(cfg.reward, CHECK_REWARD),
    })


@contextlib.contextmanager
def stop_on_sigterm():
    """Turn SIGTERM into ``SystemExit(143)`` while stages run, so a run stopped by ``kill``, a
    machine shutting down or a CI timeout still records its invocation in ``run.json``.

    (A run started in the background by a non-interactive shell ignores SIGINT, so SIGTERM is
    how it is stopped.) Outside the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_experiment(cfg: ExperimentConfig, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) an experiment; returns paths, metrics and timings."""
    root = Path(cfg.output)
    stages, paths = build_stages(cfg)  # checks every stage's settings before anything is written
    gpus = partition_gpus(cfg.jobs, visible_gpus(), cfg.device) if cfg.jobs > 1 else None
    claim_experiment_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / RUN_MARKER, {"stage": "experiment"})
    config_path = cfg.save(root / "config.yaml")
    start = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    error: BaseException | None = None
    try:
        with stop_on_sigterm():
            if cfg.jobs > 1:
                timings = run_stages_parallel(stages, config_path, cfg.jobs, fresh=fresh, gpus=gpus)
            else:
                timings = run_stages(stages, fresh=fresh)
    except BaseException as err:  # the invocation is recorded even when it stops early
        error, timings = err, {}
    wall = time.perf_counter() - start
    # A resumed experiment ran its stages over several invocations: the
    # markers keep what each stage took when it actually ran, and every
    # invocation's wall time is kept, so the total covers all sittings.
    previous = json.loads((root / "run.json").read_text()) if (root / "run.json").is_file() and not fresh else {}
    invocations = [*previous.get("invocations", []), {
        "command": " ".join(sys.argv), "started": started_at, "wall_seconds": wall, "jobs": cfg.jobs,
        "finished": error is None,
    }]
    recorded = {stage.name: stage.recorded_seconds() for stage in stages}
    record = environment_record() | {
        "stage_seconds": recorded,
        "total_stage_seconds": sum(recorded.values()),
        "wall_seconds_this_invocation": wall,
        "invocations": invocations,
        "wall_seconds_all_invocations": sum(i["wall_seconds"] for i in invocations),
    }
    write_json(root / "run.json", record)
    if error is not None:
        raise error
    metrics = json.loads((paths["eval"] / "metrics.json").read_text())
    return {"paths": {k: str(v) for k, v in paths.items()}, "metrics": metrics, "timings": timings, "wall_seconds": wall}


def run_one_stage(cfg: ExperimentConfig, name: str) -> float:
    """Run the stage called ``name`` of the experiment (a worker of :func:`run_stages_parallel`)."""
    import os

    threads = os.environ.get("DIVTUNE_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    stages, _ = build_stages(cfg)
    matching = [stage for stage in stages if stage.name == name]
    if not matching:
        raise ValueError(f"no stage {name!r}; the stages are {[s.name for s in stages]}")
    return run_stages(matching)[name]


def publish_results(cfg: ExperimentConfig, destination: str | Path) -> Path:
    """Copy the report (md, html, png, json), diagnostics, metrics and run record into ``destination``."""
    from divtune.diagnostics import FILES

    root = Path(cfg.output)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for source in sorted((root / "report").glob("*")):
        if source.suffix in {".md", ".html", ".png", ".json"} and not source.name.startswith("."):
            shutil.copy2(source, destination / source.name)
    if (root / "diagnostics").is_dir():
        (destination / "diagnostics").mkdir(exist_ok=True)
        for name in FILES:
            shutil.copy2(root / "diagnostics" / name, destination / "diagnostics" / name)
    for name in ("metrics.json",):
        shutil.copy2(root / "eval" / name, destination / name)
    shutil.copy2(root / "run.json", destination / "run.json")
    shutil.copy2(root / "config.yaml", destination / "config.yaml")
    return destination
