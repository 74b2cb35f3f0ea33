"""Deprecation warnings that divtune's users cannot act on, silenced where they arise.

transformers 5 renamed gradient checkpointing to activation checkpointing and warns
(FutureWarning) whenever the old names are used. divtune uses the new ones; PEFT 0.21
and TRL 1.16 still read the old ``is_gradient_checkpointing`` property when they wrap a
model in an adapter and at every reference pass, so every train, generate (adapter
models) and reward run printed the warning about code the user does not own.

Only these exact messages are silenced, and only inside divtune's calls into those
libraries (a decorator, not a process-wide filter): any other warning still shows.
"""

from __future__ import annotations

import contextlib
import warnings

#: The old names transformers 5 warns about, as its messages start.
CHECKPOINTING_RENAMES = (
    r"`is_gradient_checkpointing` is deprecated",
    r"`gradient_checkpointing` is deprecated",
    r"`gradient_checkpointing_enable` is deprecated",
)


@contextlib.contextmanager
def quiet_checkpointing_rename():
    """Context manager and decorator: no FutureWarning about the checkpointing rename inside.

    A generator context manager, so each decorated call (recursive ones included) gets its own
    saved filters, and leaving restores exactly what was there before.
    """
    with warnings.catch_warnings():
        for pattern in CHECKPOINTING_RENAMES:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        yield
