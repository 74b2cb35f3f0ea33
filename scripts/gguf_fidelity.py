"""What the shipped SmolLM2 (a Q4_1 GGUF, dequantised to fp32) costs in fidelity.

The original bf16 checkpoint (HuggingFaceTB/SmolLM2-135M-Instruct) is not on
this machine, so its outputs cannot be compared with the dequantised model's.
What can be measured offline:

1. The rounding step of every weight, recovered from the dequantised weights
   themselves. Q4_1 stores each block of 32 weights as min + d * q, q = 0..15,
   with the block's min and max on the grid (d = (max - min) / 15); Q8_0 stores
   d * q with d = max|w| / 127. Rounding to the nearest grid point leaves an
   error of at most d / 2, which is d / sqrt(12) RMS if uniform. The script
   checks that every block really lies on its grid.
2. How much output changes under errors of that size: the original weights
   lie within d / 2 of the dequantised ones, so each seed draws one such
   "possible original" (uniform error in [-d/2, d/2] per weight) and measures,
   on human stories of the shipped data, the per-token KL divergence of the
   next-token distributions, top-1 agreement, and perplexity, against the
   dequantised model. This treats rounding error as independent noise, a
   standard model of it, not the true (deterministic) error.

Run: python scripts/gguf_fidelity.py [--stories 24] [--tokens 128] [--seeds 3] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time

import numpy as np
import torch


def grid_steps(weight: torch.Tensor, kind: str) -> tuple[torch.Tensor, float]:
    """Per-weight rounding step d of a dequantised tensor (blocks of 32 along rows), and the worst
    distance of a block's values from its grid, in steps (0 when the layout is as assumed)."""
    blocks = weight.detach().reshape(-1, 32).double()
    if kind == "q4_1":
        low = blocks.min(dim=1, keepdim=True).values
        step = (blocks.max(dim=1, keepdim=True).values - low) / 15
        position = (blocks - low) / step.clamp_min(1e-30)
    elif kind == "q8_0":
        step = blocks.abs().max(dim=1, keepdim=True).values / 127
        position = blocks / step.clamp_min(1e-30)
    else:
        raise ValueError(kind)
    off_grid = float((position - position.round()).abs().max())
    return step.expand_as(blocks).reshape(weight.shape).float(), off_grid


def quantised_tensors(model) -> dict[str, str]:
    """Which parameters the GGUF holds quantised: token embeddings (tied output) Q8_0, other matrices Q4_1."""
    kinds = {}
    for name, param in model.named_parameters():
        if param.ndim != 2:
            continue  # norms are stored as F32
        kinds[name] = "q8_0" if "embed_tokens" in name else "q4_1"
    return kinds


def stories(n: int) -> list[tuple[str, str]]:
    from divtune.data import reddit_prompt
    from divtune.resources import shipped_dataset

    out = []
    with gzip.open(shipped_dataset("wp_scored"), "rt") as handle:
        for line in handle:
            row = json.loads(line)
            texts = [t for t in row["comment_texts"] if len(t.split()) > 150 and not t.startswith("**")]
            if texts:
                out.append((reddit_prompt(row["post_title"], row.get("post_text") or "")[:400], texts[0]))
            if len(out) == n:
                break
    return out


def batch_inputs(tokenizer, pairs, n_tokens: int):
    """Chat-formatted prompt + the first ``n_tokens`` of a human story; loss only on the story."""
    ids, masks = [], []
    for prompt, story in pairs:
        head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        story_ids = tokenizer(story, add_special_tokens=False)["input_ids"][:n_tokens]
        ids.append(head_ids + story_ids)
        masks.append([0] * len(head_ids) + [1] * len(story_ids))
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    scored = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return input_ids, attention, scored


@torch.no_grad()
def log_probs(model, input_ids, attention) -> torch.Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1)


def compare(reference: torch.Tensor, other: torch.Tensor, input_ids, scored) -> dict[str, float]:
    """Over story positions: mean KL(reference || other), top-1 agreement, perplexity of each."""
    mask = scored[:, 1:].bool()
    target = input_ids[:, 1:]
    kl = (reference.exp() * (reference - other)).sum(-1)[mask]
    agree = (reference.argmax(-1) == other.argmax(-1))[mask].float()
    nll_ref = -reference.gather(-1, target.unsqueeze(-1)).squeeze(-1)[mask]
    nll_other = -other.gather(-1, target.unsqueeze(-1)).squeeze(-1)[mask]
    return {
        "kl_mean": float(kl.mean()),
        "kl_p95": float(kl.quantile(0.95)),
        "top1_agreement": float(agree.mean()),
        "perplexity_reference": math.exp(float(nll_ref.mean())),
        "perplexity_other": math.exp(float(nll_other.mean())),
        "tokens": int(mask.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from divtune.models import load_causal_lm, load_tokenizer

    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = load_tokenizer("smollm2")
    model = load_causal_lm("smollm2", device="cpu", dtype=torch.float32).eval()
    kinds = quantised_tensors(model)
    params = dict(model.named_parameters())
    steps, weights_report = {}, {}
    for name, kind in kinds.items():
        step, off_grid = grid_steps(params[name], kind)
        steps[name] = step
        rms_w = float(params[name].detach().double().pow(2).mean().sqrt())
        rms_e = float((step.double().pow(2) / 12).mean().sqrt())
        weights_report[name] = {"kind": kind, "off_grid_steps": off_grid, "relative_rms_error": rms_e / rms_w}
    by_kind = {}
    for kind in ("q4_1", "q8_0"):
        rows = [r for r in weights_report.values() if r["kind"] == kind]
        ratios = np.array([r["relative_rms_error"] for r in rows])
        by_kind[kind] = {
            "tensors": len(rows),
            "weights": int(sum(params[n].numel() for n, r in weights_report.items() if r["kind"] == kind)),
            "relative_rms_error_median": float(np.median(ratios)),
            "relative_rms_error_max": float(ratios.max()),
            "worst_off_grid_steps": float(max(r["off_grid_steps"] for r in rows)),
        }

    input_ids, attention, scored = batch_inputs(tokenizer, stories(args.stories), args.tokens)
    reference = log_probs(model, input_ids, attention)
    originals = {name: params[name].detach().clone() for name in kinds}
    draws = []
    for seed in range(args.seeds):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in kinds:
                noise = (torch.rand(originals[name].shape, generator=generator) - 0.5) * steps[name]
                params[name].copy_(originals[name] + noise)
        draws.append(compare(reference, log_probs(model, input_ids, attention), input_ids, scored))
    with torch.no_grad():
        for name in kinds:
            params[name].copy_(originals[name])

    result = {
        "weights": by_kind,
        "output_change_vs_possible_originals": {
            key: [d[key] for d in draws] for key in draws[0]
        },
        "setup": {"stories": args.stories, "story_tokens": args.tokens, "seeds": args.seeds,
                  "seconds": round(time.perf_counter() - started, 1)},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
