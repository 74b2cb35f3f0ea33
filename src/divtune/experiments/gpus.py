"""Which GPUs each parallel stage worker gets (``--jobs`` on a GPU machine): its own, never shared."""

from __future__ import annotations

import os

from divtune.config import ConfigError


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the ids a child's ``CUDA_VISIBLE_DEVICES`` takes.

    None where torch sees no CUDA device (whatever ``CUDA_VISIBLE_DEVICES`` says); else
    those listed in ``CUDA_VISIBLE_DEVICES`` when it is set, or ``0..n-1`` for the ``n``
    devices torch sees.
    """
    import torch  # heavy

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
