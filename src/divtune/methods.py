"""The training methods, defined once: every property a stage branches on.

A stage asks this table (``METHODS[name].weighted``, ``.family``, ...), never
compares a method name to a string literal. Adding a method is one row here,
then the trainer that its ``family`` selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping, Optional

Family = Literal["sft", "dpo", "orpo", "grpo"]
PairKind = Literal["sft", "preference", "divpo", "prompts"]
DiversityReward = Optional[Literal["dpp", "partition"]]


@dataclass(frozen=True)
class Method:
    name: str
    #: The TRL trainer family that runs it: SFTTrainer, DPOTrainer, ORPOTrainer or GRPOTrainer.
    family: Family
    #: What it trains on: chosen responses only (sft), preference pairs, DivPO's pairs, or prompts (online).
    pairs: PairKind
    #: Its loss multiplies each pair by the deviation weight of ``prepare``'s ``weight`` column.
    weighted: bool
    #: The model card's name for it.
    title: str
    #: The online reward's diversity term (online methods only): DQO's DPP gain or DARLING's partition.
    diversity_reward: DiversityReward = None
    #: The paper's settings (Chung et al. 2025, appendix); online methods keep TRL's.
    paper_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def online(self) -> bool:
        """Samples from the policy while training (GRPO and its diversity variants)."""
        return self.family == "grpo"

    @property
    def needs_rejected(self) -> bool:
        """A row of its pairs file must hold a rejected response (all but chosen-only SFT data)."""
        return self.pairs != "sft"

    @property
    def trl_config_name(self) -> str:
        """The TRL config class that trains it."""
        return {"sft": "SFTConfig", "dpo": "DPOConfig", "orpo": "ORPOConfig", "grpo": "GRPOConfig"}[self.family]


_DPO = {"learning_rate": 5e-6, "num_train_epochs": 3}
_ORPO = {"learning_rate": 5e-6, "num_train_epochs": 4}

METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method("sft", "sft", "sft", False, "SFT (supervised fine-tuning)",
           paper_defaults={"learning_rate": 3e-5, "num_train_epochs": 1, "lr_scheduler_type": "cosine"}),
    Method("dpo", "dpo", "preference", False, "DPO (Direct Preference Optimization)", paper_defaults=_DPO),
    Method("ddpo", "dpo", "preference", True, "DDPO (diversified DPO, Chung et al. 2025)", paper_defaults=_DPO),
    Method("orpo", "orpo", "preference", False, "ORPO (odds-ratio preference optimization)", paper_defaults=_ORPO),
    Method("dorpo", "orpo", "preference", True, "DORPO (diversified ORPO, Chung et al. 2025)",
           paper_defaults=_ORPO),
    Method("divpo", "dpo", "divpo", False, "DivPO (diverse preference optimization)", paper_defaults=_DPO),
    Method("grpo", "grpo", "prompts", False, "GRPO (group relative policy optimization)"),
    Method("dqo", "grpo", "prompts", False, "DQO (GRPO with a determinantal-point-process diversity reward)",
           diversity_reward="dpp"),
    Method("darling", "grpo", "prompts", False, "DARLING (GRPO with a partition diversity reward)",
           diversity_reward="partition"),
)})

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
#: The type of a ``method:`` setting (pydantic validates against it).
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
#: An experiment system's method: a training method, or ``base`` (the untrained model).
BASE = "base"
SystemMethod = Literal[(BASE, *METHOD_NAMES)]  # type: ignore[valid-type]


def names(**properties: Any) -> tuple[str, ...]:
    """The methods whose properties equal ``properties``, in table order, e.g. ``names(family="dpo")``."""
    return tuple(m.name for m in METHODS.values() if all(getattr(m, k) == v for k, v in properties.items()))


def method(name: str) -> Method:
    """The table row of ``name``; a ``ValueError`` naming the known methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHOD_NAMES)}") from None
