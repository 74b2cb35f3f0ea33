"""Stage parallelism on this machine: one stage at a time with every core, or N stages at once.

``divtune experiment --jobs N`` runs ready stages in N worker processes with
cores/N torch threads each. Whether that is faster depends on the machine:
this script times the same two SmolLM2-135M DPO trainings (different seeds,
same shipped data) both ways, in one run: first one after the other with all
cores (``jobs=1``), then side by side (``jobs=2``), and prints the ratio.

    python benchmarks/bench_jobs.py [--steps 12] [--jobs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from divtune.experiments import ExperimentConfig, build_stages, run_stages, run_stages_parallel


def experiment(root: Path, steps: int, jobs: int) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "output": str(root), "model": "smollm2", "device": "cpu", "seeds": [0], "jobs": jobs,
        "prepare": {"inputs": ["shipped:wp_scored"], "max_prompts": 20, "test_fraction": 0.2,
                    "max_responses_per_prompt": 8, "embedders": {"style": "stylometric"}, "show_progress": False},
        "data": {"both": {}}, "gold_data": "both", "reward": None,
        "train": {"lora": {"r": 16, "alpha": 32, "last_layers": 8}, "max_length": 128,
                  "training": {"max_steps": steps, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                               "learning_rate": 5e-4, "save_steps": steps, "report_to": [], "disable_tqdm": True}},
        "systems": [{"name": "dpo-a", "method": "dpo", "train": {"seed": 1}},
                    {"name": "dpo-b", "method": "dpo", "train": {"seed": 2}}],
        "baseline": None,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            cfg = experiment(Path(tmp) / f"jobs{jobs}", args.steps, jobs)
            config_path = cfg.save(Path(cfg.output) / "config.yaml")
            stages, _ = build_stages(cfg)
            run_stages([s for s in stages if s.name.startswith("prepare")])
            trainings = [s for s in stages if s.name.startswith("train")]
            start = time.perf_counter()
            if jobs == 1:
                run_stages(trainings)
            else:
                run_stages_parallel(trainings, config_path, jobs)
            seconds[jobs] = time.perf_counter() - start
    print(f"two DPO trainings of {args.steps} steps (SmolLM2-135M, LoRA on the last 8 layers, 4 pairs x 128 tokens)")
    print(f"jobs=1 (one after the other, all cores): {seconds[1]:7.1f} s")
    print(f"jobs={args.jobs} (side by side, cores/{args.jobs} threads each): {seconds[args.jobs]:7.1f} s")
    print(f"jobs={args.jobs} / jobs=1 wall time: {seconds[args.jobs] / seconds[1]:.2f}  (< 1: parallel stages pay off here)")


if __name__ == "__main__":
    main()
