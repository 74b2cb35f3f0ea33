"""The experiment as a graph of stages (typicality → prepare → reward model → train each system
→ generate → evaluate → report → diagnostics), one function per stage kind.

Each stage's settings are resolved here from the experiment's shared and per-system blocks; their
hash (the stage's fingerprint) is what marks a finished stage as reusable, so what goes into a
stage's ``config`` decides which finished stages a rerun keeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divtune.config import deep_merge
from divtune.evaluation.config import EvaluateConfig
from divtune.experiments.comparisons import report_comparisons, report_interactions
from divtune.experiments.config import ExperimentConfig, SystemSpec, system_label
from divtune.experiments.stage import Stage
from divtune.experiments.summary import demonstration_caveat
from divtune.generation.config import GenerateConfig
from divtune.generation.run import run_generate
from divtune.methods import BASE, METHODS, Family, names
from divtune.prepared import pairs_file
from divtune.reward.config import RewardTrainConfig
from divtune.train import TrainConfig, run_train
from divtune.train.config import PROBE_SETTINGS, method_field_names
from divtune.train.run_output import SPEED_ONLY_SETTINGS

#: Auto frozen-prefix cache: on when at least this many DPO-family runs (systems x seeds) train on
#: the same pairs. Measured on SmolLM2, 4 pairs x 128 tokens (docs/results/benchmarks.md): filling
#: took 346 s and saved 1.1 s a step, so it pays back after about 300 steps; three runs of the
#: benchmarks' 96 steps.
PREFIX_CACHE_MIN_RUNS = 3
#: A data variant's input naming the pools file of one of the experiment's typicality builders.
TYPICALITY_INPUT = "typicality:"


@dataclass
class _Plan:
    """The stages planned so far, and what the stages still to plan read from them."""

    cfg: ExperimentConfig
    stages: list[Stage] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    #: Typicality builder → the pools file it writes.
    built: dict[str, Path] = field(default_factory=dict)
    #: Data variant → what decides its pairs (:func:`_pairs_key`).
    pair_keys: dict[str, str] = field(default_factory=dict)
    reward_dir: Path | None = None
    #: The first DPO-family run on each set of pairs computes the reference log-probs
    #: (cache); the other runs on those pairs start after it, so they read them.
    reference_leaders: dict[tuple, str] = field(default_factory=dict)
    generations: list[Path] = field(default_factory=list)
    generate_stages: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.cfg.output)

    @property
    def device(self) -> str | None:
        return None if self.cfg.device == "auto" else self.cfg.device

    @property
    def gold_dir(self) -> Path:
        return self.paths[f"data/{self.cfg.gold_data}"]

    def system(self, name: str) -> SystemSpec:
        return {s.name: s for s in self.cfg.systems}[name]


def build_stages(cfg: ExperimentConfig) -> tuple[list[Stage], dict[str, Path]]:
    """The experiment as an ordered list of stages, plus the paths of its key outputs."""
    if cfg.gold_data not in cfg.data:
        raise ValueError(f"gold_data {cfg.gold_data!r} is not one of the data variants {sorted(cfg.data)}")
    plan = _Plan(cfg)
    for name, fields in cfg.typicality.items():
        _plan_typicality(plan, name, fields)
    for variant, overrides in cfg.data.items():
        _plan_prepare(plan, variant, overrides)
    if cfg.reward is not None:
        _plan_reward_model(plan)
    for seed in cfg.seeds:
        trained: dict[str, Path] = {}  # system name → its trained model, for the systems started from it
        for system in cfg.systems:
            model_spec = cfg.model if system.method == BASE else _plan_train(plan, system, seed, trained)
            _plan_generate(plan, system, seed, model_spec)
    evaluated = _plan_evaluate(plan)
    _plan_report(plan, evaluated)
    _plan_diagnostics(plan)
    return plan.stages, plan.paths


def _plan_typicality(plan: _Plan, name: str, fields: dict[str, Any]) -> None:
    from divtune.typicality import POOLS_FILE, TypicalityConfig, run_typicality  # heavy: loads numpy

    out = plan.root / "typicality" / name
    tcfg = TypicalityConfig.from_dict(deep_merge({"inputs": ["shipped:wp_scored"]}, deep_merge(fields, {"output": str(out)})))
    plan.stages.append(Stage(f"typicality {name}", out, tcfg.to_dict(), lambda tcfg=tcfg: run_typicality(tcfg, overwrite=True)))
    plan.built[name] = out / POOLS_FILE
    plan.paths[f"typicality/{name}"] = out


def _plan_prepare(plan: _Plan, variant: str, overrides: dict[str, Any]) -> None:
    from divtune.prepare import PrepareConfig, run_prepare  # heavy: loads numpy

    out = plan.root / "data" / variant
    fields = deep_merge(deep_merge(plan.cfg.prepare, overrides), {"output": str(out)})
    reads = [spec[len(TYPICALITY_INPUT):] for spec in fields.get("inputs", []) if spec.startswith(TYPICALITY_INPUT)]
    fields["inputs"] = [_resolve_built_input(spec, plan.built, variant) for spec in fields.get("inputs", [])]
    prep = PrepareConfig.from_dict(fields)
    plan.stages.append(Stage(
        f"prepare {variant}", out, prep.to_dict(), lambda prep=prep: run_prepare(prep, overwrite=True),
        after=tuple(f"typicality {name}" for name in reads),
    ))
    plan.pair_keys[variant] = _pairs_key(prep)
    plan.paths[f"data/{variant}"] = out


def _plan_reward_model(plan: _Plan) -> None:
    from divtune.reward.fit import train_reward_model  # heavy: loads numpy

    reward_dir = plan.root / "reward"
    rcfg = RewardTrainConfig.from_dict(
        deep_merge(plan.cfg.reward, {"data": str(plan.gold_dir), "output": str(reward_dir)})
    )
    plan.stages.append(Stage(
        "reward model", reward_dir, rcfg.to_dict(), lambda rcfg=rcfg: train_reward_model(rcfg, overwrite=True),
        after=(f"prepare {plan.cfg.gold_data}",),
    ))
    plan.reward_dir = reward_dir
    plan.paths["reward"] = reward_dir


def _plan_train(plan: _Plan, system: SystemSpec, seed: int, trained: dict[str, Path]) -> str:
    """The training of ``system`` for ``seed``; returns the folder its model is written to."""
    n_seeds = len(plan.cfg.seeds)
    label = system_label(system, seed, n_seeds)
    if system.data not in plan.cfg.data:
        raise ValueError(f"system {system.name!r} names unknown data variant {system.data!r}")
    out = plan.root / "models" / label
    tcfg = TrainConfig.from_dict(_train_fields(plan, system, seed, out, trained))
    fingerprint = {k: v for k, v in tcfg.to_dict().items() if k not in SPEED_ONLY_SETTINGS} | {"resume": None}
    after = [f"prepare {system.data}"]
    if system.init:
        after.append(f"train {system_label(plan.system(system.init), seed, n_seeds)}")
    if tcfg.precompute_ref and tcfg.ref_cache and system.method in names(family=Family.DPO):
        tcfg = _share_reference_log_probs(plan, system, tcfg, f"train {label}", after)
    plan.stages.append(Stage(f"train {label}", out, fingerprint, lambda tcfg=tcfg: run_train(tcfg, overwrite=True), after=tuple(after)))
    trained[system.name] = out
    plan.paths[f"models/{label}"] = out
    return str(out)


def _train_fields(plan: _Plan, system: SystemSpec, seed: int, out: Path, trained: dict[str, Path]) -> dict[str, Any]:
    """The TrainConfig fields of one training: the shared block as it applies, the system's own, its run."""
    cfg = plan.cfg
    fields: dict[str, Any] = deep_merge(shared_train_for(system.method, cfg.train), system.train)
    fields = deep_merge(
        fields,
        {
            "method": system.method,
            "data": str(plan.paths[f"data/{system.data}"]),
            "model": cfg.model,
            "output": str(out),
            "seed": seed,
            "resume": True,
        },
    )
    if plan.device:
        fields["device"] = plan.device
    if system.init:
        if system.init not in trained:
            raise ValueError(f"system {system.name!r}: init {system.init!r} must be listed before it")
        fields["init"] = str(trained[system.init])
    if METHODS[system.method].online and plan.reward_dir is not None:
        fields["reward"] = str(plan.reward_dir)
    return fields


def _share_reference_log_probs(plan: _Plan, system: SystemSpec, tcfg: TrainConfig, name: str, after: list[str]) -> TrainConfig:
    """Order a DPO-family training (``name``) after the first one that caches the reference
    log-probs of its pairs (added to ``after``); with enough runs on those pairs, its frozen-prefix
    cache is turned on where left unset (the returned config)."""
    key = (plan.pair_keys[system.data], tcfg.model, system.init, tcfg.max_length)
    leader = plan.reference_leaders.setdefault(key, name)
    if leader != name:
        after.append(leader)
    dpo_family = names(family=Family.DPO)
    sharing = sum(
        1 for other in plan.cfg.systems if other.method in dpo_family
        and plan.pair_keys.get(other.data) == plan.pair_keys[system.data] and other.init == system.init
    ) * len(plan.cfg.seeds)
    if tcfg.prefix_cache is None and sharing >= PREFIX_CACHE_MIN_RUNS:
        # Speed only (not in the fingerprint): the fill is paid once for all these runs.
        tcfg = tcfg.model_copy(update={"prefix_cache": True})
    return tcfg


def _plan_generate(plan: _Plan, system: SystemSpec, seed: int, model_spec: str) -> None:
    cfg = plan.cfg
    label = system_label(system, seed, len(cfg.seeds))
    gen_dir = plan.root / "generations" / label
    gen_file = gen_dir / "generations.jsonl"
    gen_fields = deep_merge(
        deep_merge(cfg.generate, system.generate),
        {"model": model_spec, "prompts": str(pairs_file(plan.gold_dir, cfg.eval_split)), "output": str(gen_file),
         "name": label, "seed": seed},
    )
    if plan.device:
        gen_fields["device"] = plan.device
    gcfg = GenerateConfig.from_dict(gen_fields)
    trained = system.method != BASE
    reads = f"train {label}" if trained else f"prepare {cfg.gold_data}"
    plan.stages.append(Stage(
        f"generate {label}", gen_dir, gcfg.to_dict(), lambda gcfg=gcfg: run_generate(gcfg, overwrite=True),
        after=(reads, f"prepare {cfg.gold_data}") if trained else (reads,),
    ))
    plan.generations.append(gen_file)
    plan.generate_stages.append(f"generate {label}")


def _plan_evaluate(plan: _Plan) -> dict[str, Any]:
    """The evaluation of every generation; returns its resolved settings (the report's ``after``)."""
    from divtune.evaluation.run import run_evaluate  # heavy: loads numpy

    cfg = plan.cfg
    eval_dir = plan.root / "eval"
    eval_fields = deep_merge(
        cfg.evaluate,
        {
            "generations": [str(p) for p in plan.generations],
            "output": str(eval_dir),
            "gold": str(plan.gold_dir),
            "gold_split": cfg.eval_split,
            "reward": str(plan.reward_dir) if plan.reward_dir else None,
        },
    )
    ecfg = EvaluateConfig.from_dict(eval_fields)
    plan.stages.append(Stage(
        "evaluate", eval_dir, ecfg.to_dict(), lambda ecfg=ecfg: run_evaluate(ecfg, overwrite=True),
        after=(*plan.generate_stages, f"prepare {cfg.gold_data}", *(("reward model",) if plan.reward_dir else ())),
    ))
    plan.paths["eval"] = eval_dir
    return ecfg.to_dict()


def _plan_report(plan: _Plan, evaluated: dict[str, Any]) -> None:
    from divtune.reporting.run import run_report  # heavy: loads numpy

    cfg = plan.cfg
    eval_dir, report_dir = plan.paths["eval"], plan.root / "report"
    baseline = cfg.baseline
    comparisons, seed_groups = report_comparisons(cfg)
    interactions = report_interactions(cfg)
    report_config = {
        "eval": str(eval_dir),
        "baseline": baseline,
        "comparisons": comparisons,
        "seed_groups": seed_groups,
        "after": evaluated,
    }
    if interactions:  # only when set: the reports of experiments without them keep their fingerprints
        report_config["interactions"] = interactions
    if cfg.demonstration:
        report_config["demonstration"] = True
    plan.stages.append(
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
    plan.paths["report"] = report_dir


def _plan_diagnostics(plan: _Plan) -> None:
    """Training curves and weight distributions: the "why" behind the report's numbers."""
    from divtune.reporting.diagnostics import run_diagnostics  # heavy: loads numpy

    root = plan.root
    diagnostics_dir = root / "diagnostics"
    read = [s for s in plan.stages if s.name.startswith(("prepare", "train"))]
    plan.stages.append(
        Stage(
            "diagnostics",
            diagnostics_dir,
            {"root": str(root), "after": [s.fingerprint for s in read]},
            lambda: run_diagnostics(root, diagnostics_dir, overwrite=True),
            after=tuple(s.name for s in read),
        )
    )
    plan.paths["diagnostics"] = diagnostics_dir


def _pairs_key(prep) -> str:
    """What decides a prepared variant's pairs (not its weights): variants with equal keys share pairs."""
    fields = prep.to_dict()
    for weight_only in ("output", "embedders", "weight_floor", "cache_dir", "show_progress", "embed_batch_size"):
        fields.pop(weight_only, None)
    return json.dumps(fields, sort_keys=True, default=str)


def _resolve_built_input(spec: str, built: dict[str, Path], variant: str) -> str:
    """``typicality:NAME`` → the pools file that builder writes; any other input as it is."""
    if not spec.startswith(TYPICALITY_INPUT):
        return spec
    name = spec[len(TYPICALITY_INPUT):]
    if name not in built:
        raise ValueError(f"data variant {variant!r} reads {spec!r}, but the typicality builders are {sorted(built)}")
    return str(built[name])


def shared_train_for(method: str, shared: dict[str, Any]) -> dict[str, Any]:
    """The experiment's shared ``train:`` block as it applies to a system of ``method``.

    A shared block serves systems of several methods: its probes and the ``training`` keys
    of one method's TRL config (e.g. DPO's ``precompute_ref_batch_size``) are left out for the
    methods that have no such setting, instead of failing their stage after the model loads.
    Set on a system's own ``train:`` block, a setting its method lacks is refused up front.
    """
    probed = method in names(family=Family.DPO)
    fitted = {k: v for k, v in shared.items() if probed or k not in PROBE_SETTINGS}
    if isinstance(shared.get("training"), dict):
        accepted = method_field_names(method)
        fitted["training"] = {k: v for k, v in shared["training"].items() if k in accepted}
    return fitted
