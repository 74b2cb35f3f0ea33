"""Step time of divtune's trainers against TRL's own, and peak memory with and
without ``--precompute-ref``.

In one process, on the same tiny model (built from a config, no hub) and the
same batch, this times N training steps (forward + loss + backward, through
each trainer's ``training_step``) of TRL's ``DPOTrainer`` against divtune's
DDPO trainer, then TRL's experimental ``ORPOTrainer`` against DORPO. Steps of
the two trainers alternate so machine noise hits both alike; ratios are
printed of the median and of the fastest step times (target: <= 1.03 on CPU).

Peak memory is measured in a fresh child process per setting (peak RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU), for LoRA and for full
fine-tuning, where the reference is a second copy unless precomputed.

    python benchmarks/bench_train.py [--steps 20] [--hidden 128] [--layers 2] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model/tokenizer builders of the test suite

import torch  # noqa: E402
from _train_support import make_pairs  # noqa: E402
from conftest import build_tiny_llama, build_tiny_tokenizer  # noqa: E402


def conversational_rows(n: int, with_weight: bool) -> list[dict]:
    rows = []
    for row in make_pairs(n, seed=7):
        item = {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        if with_weight:
            item["weight"] = row["weight"]
        rows.append(item)
    return rows


def trl_args(config_class, output_dir, batch, **extra):
    return config_class(
        output_dir=output_dir, use_cpu=not torch.cuda.is_available(), bf16=False, gradient_checkpointing=False,
        report_to=[], max_length=256, per_device_train_batch_size=batch, disable_tqdm=True, **extra,
    )


def lora():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def build_trainer(kind: str, ours: bool, model, tokenizer, batch: int, workdir: str, precompute=False, use_lora=True):
    """TRL's trainer or divtune's, for kind 'dpo' or 'orpo', on ``model`` itself."""
    from datasets import Dataset

    from divtune import DeviationDPOConfig, DeviationDPOTrainer, DeviationORPOConfig, DeviationORPOTrainer
    from divtune.train.trl_orpo import import_orpo

    common = dict(
        model=model, processing_class=tokenizer, peft_config=lora() if use_lora else None,
        train_dataset=Dataset.from_list(conversational_rows(batch, with_weight=ours)),
    )
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = trl_args(DeviationDPOConfig if ours else DPOConfig, workdir, batch, beta=0.1, precompute_ref_log_probs=precompute)
        return DeviationDPOTrainer(args=args, **common) if ours else DPOTrainer(args=args, **common)
    orpo = import_orpo()
    args = trl_args(DeviationORPOConfig if ours else orpo.ORPOConfig, workdir, batch, beta=0.25)
    return DeviationORPOTrainer(args=args, **common) if ours else orpo.ORPOTrainer(args=args, **common)


def build_pair(kind: str, model, tokenizer, batch: int, workdir: str):
    """(TRL trainer, divtune trainer) on two copies of one model."""
    return tuple(
        build_trainer(kind, ours, copy.deepcopy(model), tokenizer, batch, workdir) for ours in (False, True)
    )


def one_batch(trainer, batch: int):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(batch)])


def timed_step(trainer, batch, ours: bool) -> float:
    start = time.perf_counter()
    counts = None
    if ours:  # what get_batch_samples adds per optimizer step
        counts = torch.tensor(trainer._local_counts(batch), dtype=torch.float32)
    trainer.training_step(trainer.model, batch, counts)
    trainer.model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_time_ratio(kind: str, model, tokenizer, batch: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        theirs, ours = build_pair(kind, model, tokenizer, batch, workdir)
        for trainer in (theirs, ours):
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call training_step directly
        batches = (one_batch(theirs, batch), one_batch(ours, batch))
        times = ([], [])
        for step in range(steps + 3):
            order = (0, 1) if step % 2 == 0 else (1, 0)
            for which in order:
                elapsed = timed_step((theirs, ours)[which], batches[which], ours=which == 1)
                if step >= 3:  # warm-up steps excluded
                    times[which].append(elapsed)
    trl_median, our_median = statistics.median(times[0]), statistics.median(times[1])
    # Noise from other processes only adds time, so the fastest step is the steadiest estimate on a shared machine.
    trl_min, our_min = min(times[0]), min(times[1])
    return {"trl_s": trl_median, "divtune_s": our_median, "ratio": our_median / trl_median,
            "trl_min_s": trl_min, "divtune_min_s": our_min, "ratio_min": our_min / trl_min}


def memory_child(kind: str, precompute: bool, use_lora: bool, hidden: int, layers: int, batch: int) -> dict:
    """Build one divtune trainer and run 3 steps; report the peak memory of this process."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer()
    with tempfile.TemporaryDirectory() as model_dir:
        # Loaded from a folder, as divtune does: TRL rebuilds the full-fine-tuning reference from that path.
        build_tiny_llama(tokenizer, seed=0, hidden_size=hidden, num_layers=layers).save_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        memory = _peak_memory_of_steps(kind, model, tokenizer, batch, precompute, use_lora)
    return memory


def _peak_memory_of_steps(kind, model, tokenizer, batch, precompute, use_lora) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as workdir:
        ours = build_trainer(kind, True, model, tokenizer, batch, workdir, precompute=precompute, use_lora=use_lora)
        ours.current_gradient_accumulation_steps = 1
        batch_inputs = one_batch(ours, batch)
        for _ in range(3):
            timed_step(ours, batch_inputs, ours=True)
    if torch.cuda.is_available():
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "what": "cuda max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "what": "peak RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mem-hidden", type=int, default=512, help="model size for the memory runs")
    parser.add_argument("--mem-layers", type=int, default=6)
    parser.add_argument("--memory-child", nargs=3, metavar=("KIND", "PRECOMPUTE", "LORA"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        kind, precompute, use_lora = args.memory_child
        print(json.dumps(memory_child(kind, precompute == "1", use_lora == "1", args.hidden, args.layers, args.batch)))
        return

    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(tokenizer, seed=0, hidden_size=args.hidden, num_layers=args.layers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device} threads={torch.get_num_threads()} hidden={args.hidden} layers={args.layers} "
          f"batch={args.batch} pairs steps={args.steps} (LoRA r=16, fp32)")
    for kind, names in (("dpo", ("TRL DPO", "divtune DDPO")), ("orpo", ("TRL ORPO", "divtune DORPO"))):
        result = step_time_ratio(kind, model, tokenizer, args.batch, args.steps)
        print(f"{names[1]} / {names[0]} step time: {result['ratio']:.3f} (median: "
              f"{result['divtune_s'] * 1e3:.1f} ms vs {result['trl_s'] * 1e3:.1f} ms), "
              f"{result['ratio_min']:.3f} (fastest step: {result['divtune_min_s'] * 1e3:.1f} ms vs "
              f"{result['trl_min_s'] * 1e3:.1f} ms)")

    print(f"peak memory of divtune DDPO (fresh process each, 3 steps, hidden={args.mem_hidden} "
          f"layers={args.mem_layers}):")
    for use_lora in ("1", "0"):
        for precompute in ("0", "1"):
            command = [sys.executable, __file__, "--memory-child", "dpo", precompute, use_lora,
                       "--hidden", str(args.mem_hidden), "--layers", str(args.mem_layers), "--batch", str(args.batch)]
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(child.stdout.strip().splitlines()[-1])
            label = f"{'LoRA' if use_lora == '1' else 'full fine-tuning'}, precompute_ref={precompute == '1'}"
            print(f"  {label:<40} {result['peak_mib']:8.1f} MiB ({result['what']})")


if __name__ == "__main__":
    main()
