"""``divtune train``: SFT, DPO, DDPO, ORPO, DORPO and DivPO on TRL + PEFT
(online GRPO / DQO / DARLING dispatch to :mod:`divtune.train.online`)."""

from divtune.train.config import METHODS, OFFLINE_METHODS, ONLINE_METHODS, TrainConfig
from divtune.train.runner import run_train

__all__ = ["METHODS", "OFFLINE_METHODS", "ONLINE_METHODS", "TrainConfig", "run_train"]
