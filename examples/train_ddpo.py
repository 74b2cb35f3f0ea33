"""DDPO with TRL and PEFT: weight each preference pair by its chosen response's
deviation, then train with divtune's drop-in ``DPOTrainer`` subclass.

    python examples/train_ddpo.py --data pairs.jsonl --model HuggingFaceTB/SmolLM2-135M-Instruct --output ddpo-model

``pairs.jsonl`` holds one preference pair a line in TRL's format: ``prompt``,
``chosen``, ``rejected`` (text, or conversational message lists). Rows that
share a prompt form one pool: the more a chosen response differs from the
other responses to its prompt, the more its pair weighs (docs/method.md §3).
"""

from __future__ import annotations

import argparse

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from divtune import DeviationDPOConfig, DeviationDPOTrainer, add_deviation_weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="JSONL file of prompt/chosen/rejected rows")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="hub id or local folder")
    parser.add_argument("--output", default="ddpo-model", help="where the adapter is saved")
    parser.add_argument("--embedders", nargs="+", default=["minilm", "stylometric"], help="deviation embedders")
    parser.add_argument("--max-steps", type=int, default=-1, help="-1: train --epochs epochs")
    parser.add_argument("--epochs", type=float, default=3.0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    dataset = load_dataset("json", data_files=args.data, split="train")
    dataset = add_deviation_weights(dataset, embedders=args.embedders)  # adds the float column "weight"

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    config = DeviationDPOConfig(
        output_dir=args.output,
        beta=0.1,
        learning_rate=5e-6,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        max_length=512,
        report_to=[],
    )
    trainer = DeviationDPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.save_model(args.output)
    print(f"saved the DDPO adapter to {args.output}")


if __name__ == "__main__":
    main()
