"""Shared fixtures: tiny random models built from a config (no hub), paths to
the shipped data and models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_TINY_CORPUS = [
    "Once upon a time there was a dragon who loved to read stories.",
    "The knight rode across the hills at dawn, looking for the lost city.",
    "She opened the door and the room was full of light and music.",
    "Write a story about a robot who learns to paint.",
    "The sea was calm; the old sailor told his tale again.",
    "\"Where are you going?\" he asked. \"Home,\" she said, smiling.",
] * 4


def build_tiny_tokenizer():
    """A real byte-level BPE tokenizer trained in milliseconds on a toy corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_TINY_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny_llama(tokenizer, seed: int = 0, hidden_size: int = 32, num_layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def save_tiny_lm(directory: Path, seed: int = 0) -> Path:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(tokenizer, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random Llama + BPE tokenizer (with chat template), saved as safetensors."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def wp_scored_path() -> Path:
    from divtune.resources import shipped_dataset

    return shipped_dataset("wp_scored")


@pytest.fixture(scope="session")
def wp_fresh_path() -> Path:
    from divtune.resources import shipped_dataset

    return shipped_dataset("wp_fresh")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from divtune.resources import minilm_dir

    return minilm_dir()


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
