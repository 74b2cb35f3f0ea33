"""DORPO with TRL and PEFT: ORPO (no reference model) with each pair weighted
by its chosen response's deviation.

    python examples/train_dorpo.py --data pairs.jsonl --model HuggingFaceTB/SmolLM2-135M-Instruct --output dorpo-model

Same data as examples/train_ddpo.py. ``--dorpo-mode outside`` (default)
multiplies each pair's whole ORPO loss by its weight; ``released`` follows the
paper's released code (docs/method.md §4).
"""

from __future__ import annotations

import argparse

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from divtune import DeviationORPOConfig, DeviationORPOTrainer, add_deviation_weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="JSONL file of prompt/chosen/rejected rows")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="hub id or local folder")
    parser.add_argument("--output", default="dorpo-model", help="where the adapter is saved")
    parser.add_argument("--embedders", nargs="+", default=["minilm", "stylometric"], help="deviation embedders")
    parser.add_argument("--dorpo-mode", choices=["outside", "released"], default="outside")
    parser.add_argument("--max-steps", type=int, default=-1, help="-1: train --epochs epochs")
    parser.add_argument("--epochs", type=float, default=4.0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    dataset = load_dataset("json", data_files=args.data, split="train")
    dataset = add_deviation_weights(dataset, embedders=args.embedders)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    config = DeviationORPOConfig(
        output_dir=args.output,
        beta=0.25,  # the paper's lambda: weight of the odds-ratio term
        dorpo_mode=args.dorpo_mode,
        learning_rate=5e-6,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        max_length=512,
        report_to=[],
    )
    trainer = DeviationORPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.save_model(args.output)
    print(f"saved the DORPO adapter to {args.output}")


if __name__ == "__main__":
    main()
