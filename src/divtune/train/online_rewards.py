"""The rewards of online training: per-sample quality (a reward model, or a constant) as
TRL reward functions, and the diversity-weighted reward of whole groups (divtune.reward.online)
that every process computes from the gathered quality and embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from divtune.io import InputError
from divtune.methods import METHODS
from divtune.reward.online import group_rewards
from divtune.train.online_config import OnlineConfig

#: ``(prompts, completions) -> (n,) quality``; prompts are the plain prompt texts.
QualityFn = Callable[[list[str], list[str]], np.ndarray]
#: ``texts -> (n, d)`` embeddings (rows are normalised again in divtune.reward.online).
EmbedFn = Callable[[list[str]], np.ndarray]


def completion_text(completion: Any) -> str:
    """TRL completions are strings, or message lists for conversational prompts."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content", "")) for message in completion)


def constant_quality(prompts: list[str], completions: list[str]) -> np.ndarray:
    """Quality without a reward model: 1 for every sample (the diversity term alone)."""
    return np.ones(len(completions))


def reward_model_quality(reward_dir: str | Path, use_gpu: bool = False) -> QualityFn:
    """Quality from a ``divtune reward train`` model, loaded at first use.

    Loading late puts it on this process's device: by then the trainer's
    accelerator has selected the process's GPU as the current CUDA device.
    """
    reward_dir = Path(reward_dir)
    if not reward_dir.is_dir():
        raise InputError(reward_dir, "reward model folder not found (run `divtune reward train` first)")
    loaded: list[Any] = []

    def quality(prompts: list[str], completions: list[str]) -> np.ndarray:
        if not loaded:
            import torch  # heavy

            from divtune.reward.model import RewardModel  # heavy: loads numpy

            device = f"cuda:{torch.cuda.current_device()}" if use_gpu else "cpu"
            loaded.append(RewardModel.load(reward_dir, device=device))
        return np.asarray(loaded[0].score(prompts, completions), dtype=np.float64)

    return quality


def embedder_fn(spec: str) -> EmbedFn:
    from divtune.embedders import load_embedder  # heavy: loads numpy

    embedder = load_embedder(spec)
    return lambda texts: embedder.embed(texts, show_progress=False)


class QualityReward:
    """The per-sample TRL reward function (quality only; diversity is added on whole groups later)."""

    def __init__(self, quality_fn: QualityFn, name: str):
        self.quality_fn = quality_fn
        # TRL names reward columns (and metrics ``rewards/<name>/mean``) after ``__name__``.
        self.__name__ = name

    def __call__(self, prompts, completions, prompt_text: Sequence[str], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [float(x) for x in self.quality_fn(list(prompt_text), texts)]


def score_gathered_groups(
    quality_all: np.ndarray,
    local_completions: list[str],
    *,
    method: str,
    online: OnlineConfig,
    embed: EmbedFn | None,
    gather: Callable[[Any], Any],
    device: Any = "cpu",
    num_generations: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The group-integrity step shared by every process.

    ``quality_all`` (N,) is already gathered over processes (process 0's
    slice first); ``local_completions`` is this process's slice. Local
    embeddings are gathered with the same ``gather`` so row k of both is the
    same sample, then whole groups of ``num_generations`` (default
    ``online.num_generations``) are scored.
    ``device`` is where the gather happens (NCCL gathers CUDA tensors only).
    Returns the diversity-weighted reward (N,) and the diversity term (N,).
    """
    group_size = num_generations or online.num_generations
    if METHODS[method].diversity_reward is None:
        return group_rewards(method, quality_all, None, group_size)
    if embed is None:
        raise ValueError(f"method {method!r} needs an embedder")
    import torch  # heavy

    local_emb = torch.as_tensor(np.asarray(embed(local_completions), dtype=np.float64), device=device)
    all_emb = gather(local_emb).cpu().numpy()
    return group_rewards(
        method,
        quality_all,
        all_emb,
        group_size,
        alpha=online.alpha,
        threshold=online.darling_threshold,
        floor=online.darling_floor,
    )
