"""A stage: a named unit of work with its own output folder and a done marker keyed by its settings.

A stage is marked done (with a hash of its resolved settings, its ``fingerprint``) only after it
finished, so a rerun skips finished stages, redoes a stage whose settings changed, and redoes a
stage that was killed halfway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from divtune.io import read_stage_done


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
