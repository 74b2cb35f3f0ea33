"""Worker for the group-integrity test (run by tests/test_online_train.py).

    torchrun --nproc_per_node 2 tests/_mp_online_rewards.py TINY_LM_DIR OUT.json 2
    python tests/_mp_online_rewards.py TINY_LM_DIR OUT.json 1

Builds the real DiversityGRPOTrainer (divtune.train.online_trainer.make_trainer) on a
tiny model and calls its ``_calculate_rewards`` (the method GRPO calls during
training) on a fixed batch of GROUP_COUNT groups of G completions. Each
process gets its contiguous slice of the batch, as TRL gives it; with 2
processes and G=4, 3 groups the middle group straddles both. Rank 0 writes
the gathered rewards per method to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

G = 4
# 3 groups x 4; repeats inside groups so both diversity terms vary within a group.
COMPLETIONS = [
    "The dragon slept.", "The dragon slept.", "A ship sailed west at dawn!", "Why? Nobody knew, really.",
    "She laughed; the rain kept falling on the old roof.", "She laughed.", "She laughed.", "Numbers: 1, 2, 3.",
    "Silence.", "A long, winding sentence that goes on and on, and then, at last, ends.", "Silence.", "Silence.",
]
PROMPTS = [f"Prompt {i // G}" for i in range(len(COMPLETIONS))]


def quality(prompts: list[str], completions: list[str]) -> list[float]:
    # Deterministic and per sample, like a reward model.
    return [len(c) / 50.0 - 0.5 for c in completions]


def main(model_dir: str, out_path: str, expected_world_size: int) -> None:
    from datasets import Dataset

    from divtune.models import load_causal_lm, load_tokenizer
    from divtune.train import TrainConfig
    from divtune.train.online_rewards import embedder_fn
    from divtune.train.online_trainer import make_trainer
    from divtune.train.online_config import OnlineConfig

    # Loaded from a folder, as in training: TRL rebuilds the reference model from that path.
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = load_causal_lm(model_dir, device="cpu")
    dataset = Dataset.from_list([{"prompt": p, "prompt_text": p, "pool_id": p} for p in sorted(set(PROMPTS))])
    online = OnlineConfig(num_generations=G, alpha=1.5, darling_threshold=0.95, darling_floor=0.1, embedder="stylometric")
    cfg = TrainConfig(
        method="dqo", online=online, output=str(Path(out_path).parent / "mp_trainer"), seed=0,
        lora={"enabled": False}, max_length=64, device="cpu", training={"report_to": "none"},
    )
    trainer = make_trainer(
        cfg, model=model, tokenizer=tokenizer, dataset=dataset, quality_fn=quality,
        embed_fn=embedder_fn("stylometric"), device="cpu",
    )
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    assert world == expected_world_size, f"expected world size {expected_world_size}, got {world}"
    per_process = len(COMPLETIONS) // world
    local = slice(rank * per_process, (rank + 1) * per_process)
    inputs = [{"prompt": p, "prompt_text": p, "pool_id": p} for p in PROMPTS[local]]
    completions = COMPLETIONS[local]
    completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]

    result = {"world_size": world, "rewards": {}}
    for method in ("grpo", "dqo", "darling"):
        trainer.divtune_method = method
        rewards = trainer._calculate_rewards(inputs, PROMPTS[local], completions, completion_ids)
        result["rewards"][method] = rewards[:, 0].tolist()
    if rank == 0:
        Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
