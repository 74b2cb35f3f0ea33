"""``divtune train``: SFT, DPO, DDPO, ORPO, DORPO and DivPO on TRL + PEFT
(online GRPO / DQO / DARLING dispatch to :mod:`divtune.train.online`).

Names are imported on first use, so importing one submodule (e.g. the public
trainers) does not pull in the CLI's config and runner.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TrainConfig": "divtune.train.config",
    "run_train": "divtune.train.runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
