"""The Hugging Face backend of ``divtune generate``: seeded, batched sampling with ``model.generate``.

:class:`HFSampler` holds the model and tokenizer of a config and samples a batch
after seeding torch; :func:`run_hf` runs the work plan of independent sampling
(divtune.generation.plan) into the generations file; the strategies call the
sampler themselves. Each distinct prompt of a batch can be run through the model
once, its KV cache shared among its samples (:func:`shared_prompt_cache`).
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from divtune import models
from divtune.generation.config import GenerateConfig
from divtune.generation.plan import batch_seed
from divtune.generation.prompts import Prompt, encode_prompts, format_prompt, format_prompts
from divtune.generation.sample_file import append_rows, sample_key, sample_row


def pad_left(ids: list[list[int]], pad_token_id: int, device=None) -> dict:
    """A left-padded batch (``input_ids``, ``attention_mask``), as the tokenizer pads with ``padding_side="left"``."""
    import torch  # heavy

    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
    if device is not None:
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _torch_dtype(name: str, device: str):
    import torch  # heavy

    if name == "auto":
        return models.default_dtype(device)
    return getattr(torch, name)


class HFSampler:
    """The HF model and tokenizer of a config, and seeded batch sampling with its decoding settings."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.device = cfg.device or models.default_device()
        self.tokenizer = models.load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")
        self._model = None

    @property
    def model(self):
        """Loaded on first use, so a resumed run with nothing left to sample never loads it."""
        if self._model is None:
            self._model = models.load_causal_lm(
                self.cfg.model, dtype=_torch_dtype(self.cfg.dtype, self.device), device=self.device,
                trust_remote_code=self.cfg.trust_remote_code, merge_adapter=True,
            )
            self._model.eval()
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sample(self, messages: list[str], seed: int, max_new_tokens: int) -> list[tuple[str, int]]:
        """One sample per user message, as the model sees it through its chat template."""
        formatted = [format_prompt(self.tokenizer, m, self.cfg.use_chat_template) for m in messages]
        return self.sample_formatted(formatted, seed, max_new_tokens)

    def sample_formatted(
        self, formatted: list[str], seed: int, max_new_tokens: int, prompt_of_row: list[int] | None = None
    ) -> list[tuple[str, int]]:
        """(text, new-token count) per formatted prompt, after ``torch.manual_seed(seed)``.

        ``prompt_of_row`` names rows that hold the same prompt, so its KV cache
        is computed once and shared (``share_prompt_cache``).
        """
        import torch  # heavy

        cfg, tokenizer = self.cfg, self.tokenizer
        sampling = cfg.temperature > 0
        encoded = pad_left(encode_prompts(tokenizer, formatted, cfg.use_chat_template), tokenizer.pad_token_id,
                           self.device)
        cache = None
        if cfg.share_prompt_cache and prompt_of_row is not None:
            cache = shared_prompt_cache(self.model, encoded, prompt_of_row)
        torch.manual_seed(seed)
        with torch.no_grad():
            generated = self.model.generate(
                **encoded,
                past_key_values=cache,
                do_sample=sampling,
                temperature=cfg.temperature if sampling else None,
                top_p=cfg.top_p if sampling else None,
                top_k=cfg.top_k if sampling else None,
                repetition_penalty=cfg.repetition_penalty,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        outputs = []
        for tokens in generated[:, encoded["input_ids"].shape[1]:]:
            n_tokens = _count_generated(tokens, tokenizer)
            outputs.append((tokenizer.decode(tokens[:n_tokens], skip_special_tokens=True).strip(), n_tokens))
        return outputs


def run_hf(cfg: GenerateConfig, prompts: list[Prompt], todo: list[tuple[int, list[tuple[int, int]]]], done: set,
           output: Path, total: int, stop_after_batches: int | None) -> None:
    """Sample the batches ``todo`` (index, items) into ``output``, skipping the samples in ``done``."""
    sampler = HFSampler(cfg)
    formatted = format_prompts(sampler.tokenizer, prompts, cfg)
    progress = tqdm(total=total, initial=len(done), desc="generate", unit="sample", disable=not cfg.show_progress)
    written_batches = 0
    for batch_index, batch in todo:
        seed = batch_seed(cfg.seed, batch_index)
        outputs = sampler.sample_formatted(
            [formatted[p] for p, _ in batch], seed, cfg.max_new_tokens, prompt_of_row=[p for p, _ in batch]
        )
        rows = []
        for (p, s), (text, n_tokens) in zip(batch, outputs):
            if sample_key(prompts[p].prompt_id, s) in done:
                continue  # written before an interruption; the batch was rerun only for its missing samples
            rows.append(sample_row(cfg, prompts[p], s, text, seed, n_tokens))
        append_rows(output, rows)
        progress.update(len(rows))
        written_batches += 1
        if stop_after_batches is not None and written_batches >= stop_after_batches:
            break
    progress.close()


def shared_prompt_cache(model, encoded, prompt_of_row: list[int]):
    """The KV cache of every row's prompt but its last token, computed once per distinct prompt.

    ``encoded`` is the left-padded batch (one row per sample) and ``prompt_of_row``
    the prompt of each row; rows of one prompt are identical, so one forward pass
    over the distinct prompts, with its cache rows repeated, equals the batch's own
    prefill. ``generate`` then only feeds each row's last prompt token. Returns None
    when there is nothing to share (every prompt once) or no prefix (1-token prompts).
    """
    import torch  # heavy
    from transformers import DynamicCache  # heavy

    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    distinct = list(dict.fromkeys(prompt_of_row))
    if len(distinct) == len(prompt_of_row) or input_ids.shape[1] < 2:
        return None
    first_row = [prompt_of_row.index(p) for p in distinct]
    rows_of = torch.tensor([distinct.index(p) for p in prompt_of_row], device=input_ids.device)
    ids, mask = input_ids[first_row, :-1], attention_mask[first_row, :-1]
    # Left padding: positions count real tokens only, as generate() computes them.
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    cache.batch_select_indices(rows_of)
    return cache


def _count_generated(tokens, tokenizer) -> int:
    """Tokens up to and including the first EOS (the rest is padding after the sequence ended)."""
    eos = tokenizer.eos_token_id
    ids = tokens.tolist()
    if eos is not None and eos in ids:
        return ids.index(eos) + 1
    return len(ids)
