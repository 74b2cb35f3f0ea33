"""The experiment's YAML: which systems (a model made by one method) are compared, on which data,
with which shared and per-system stage settings (``ExperimentConfig``, ``SystemSpec``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from divtune.config import StageConfig
from divtune.methods import SystemMethod


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
    #: b × method interaction. Written to the report's interactions.json (divtune.reporting).
    interactions: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: Stages run at once, each in its own process with cores/jobs threads (``--jobs``).
    jobs: int = Field(1, ge=1)
    #: A run sized to show the pipeline, not to measure anything (the quickstart): its report
    #: opens with a caveat giving its size and pointing at the recorded results.
    demonstration: bool = False

    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("demonstration",)


def system_label(system: SystemSpec, seed: int, n_seeds: int) -> str:
    """The name of one run of ``system``: its own name with one seed, ``NAME-sSEED`` with several."""
    return system.name if n_seeds == 1 else f"{system.name}-s{seed}"
