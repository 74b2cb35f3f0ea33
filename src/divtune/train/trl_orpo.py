"""TRL's ORPO, which lives in ``trl.experimental.orpo`` since late 2025.

One leaf module imports it, so that the config readers and the trainers need
not import each other for it.
"""

from __future__ import annotations

import warnings


def import_orpo():
    """``trl.experimental.orpo``, without its "experimental API" warning: divtune pins TRL 1.16."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        import trl.experimental.orpo as orpo  # heavy
    return orpo
