"""The training methods, defined once: every property a stage branches on.

A stage asks this table (``METHODS[name].weighted``, ``.family is Family.DPO``,
...), never compares a method name to a string literal (tests/test_architecture.py). Adding a method is one row here,
then the trainer that its ``family`` selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, Mapping, Optional


class Family(StrEnum):
    """The TRL trainer that runs a method."""

    SFT = "sft"
    DPO = "dpo"
    ORPO = "orpo"
    GRPO = "grpo"


class Pairs(StrEnum):
    """What a method trains on."""

    CHOSEN = "chosen"  # the chosen responses alone (supervised)
    PREFERENCE = "preference"  # chosen/rejected pairs
    DIVPO = "divpo"  # DivPO's pairs (prepare --pairs divpo)
    PROMPTS = "prompts"  # prompts only: the policy samples (online)


DiversityReward = Optional[Literal["dpp", "partition"]]


@dataclass(frozen=True)
class Method:
    name: str
    #: The TRL trainer family that runs it: SFTTrainer, DPOTrainer, ORPOTrainer or GRPOTrainer.
    family: Family
    pairs: Pairs
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
        return self.family is Family.GRPO

    @property
    def needs_rejected(self) -> bool:
        """A row of its pairs file must hold a rejected response (all but chosen-only SFT data)."""
        return self.pairs is not Pairs.CHOSEN

    @property
    def trl_config_name(self) -> str:
        """The TRL config class that trains it."""
        return f"{self.family.upper()}Config"


_DPO = {"learning_rate": 5e-6, "num_train_epochs": 3}
_ORPO = {"learning_rate": 5e-6, "num_train_epochs": 4}

METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method("sft", Family.SFT, Pairs.CHOSEN, False, "SFT (supervised fine-tuning)",
           paper_defaults={"learning_rate": 3e-5, "num_train_epochs": 1, "lr_scheduler_type": "cosine"}),
    Method("dpo", Family.DPO, Pairs.PREFERENCE, False, "DPO (Direct Preference Optimization)", paper_defaults=_DPO),
    Method("ddpo", Family.DPO, Pairs.PREFERENCE, True, "DDPO (diversified DPO, Chung et al. 2025)",
           paper_defaults=_DPO),
    Method("orpo", Family.ORPO, Pairs.PREFERENCE, False, "ORPO (odds-ratio preference optimization)",
           paper_defaults=_ORPO),
    Method("dorpo", Family.ORPO, Pairs.PREFERENCE, True, "DORPO (diversified ORPO, Chung et al. 2025)",
           paper_defaults=_ORPO),
    Method("divpo", Family.DPO, Pairs.DIVPO, False, "DivPO (diverse preference optimization)", paper_defaults=_DPO),
    Method("grpo", Family.GRPO, Pairs.PROMPTS, False, "GRPO (group relative policy optimization)"),
    Method("dqo", Family.GRPO, Pairs.PROMPTS, False,
           "DQO (GRPO with a determinantal-point-process diversity reward)", diversity_reward="dpp"),
    Method("darling", Family.GRPO, Pairs.PROMPTS, False, "DARLING (GRPO with a partition diversity reward)",
           diversity_reward="partition"),
)})

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
#: The type of a ``method:`` setting (pydantic validates against it).
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
#: An experiment system's method: a training method, or ``base`` (the untrained model).
BASE = "base"
SystemMethod = Literal[(BASE, *METHOD_NAMES)]  # type: ignore[valid-type]


def names(**properties: Any) -> tuple[str, ...]:
    """The methods whose properties equal ``properties``, in table order, e.g. ``names(family=Family.DPO)``."""
    return tuple(m.name for m in METHODS.values() if all(getattr(m, k) == v for k, v in properties.items()))
