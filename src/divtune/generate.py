"""Batched sampling from a policy model into a generations JSONL file.

One output line per sample: ``prompt_id, prompt, sample_index, text, model,
seed`` plus the decoding settings. The run is resumable: every finished batch
is appended and fsync'ed, and a restarted run skips the samples already on
disk (a torn last line from a killed run is cut off first).

Determinism: the work is a fixed list of (prompt, sample_index) items, in
prompt order, cut into batches of ``batch_size`` sequences. Batch ``k`` is
sampled after seeding torch with ``batch_seed(seed, k)``. A resumed run
therefore regenerates an interrupted batch exactly as an uninterrupted run
would (same prompts, same batch, same seed) and writes only its missing
samples, so the file ends up identical, as long as the prompts, ``seed`` and
``batch_size`` are unchanged. The vllm backend instead seeds every request
with ``sample_seed(seed, prompt_id, sample_index)``, which does not depend on
batching at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

from pydantic import Field

from divtune.config import ConfigError, StageConfig
from divtune.io import InputError, iter_jsonl, open_text, write_json
from divtune.strategies.prompts import IterativeSettings, VerbalizedSettings
from divtune.vllm_requests import VLLMSettings

logger = logging.getLogger(__name__)

#: Config fields that change which samples are produced: a resumed run must
#: agree with the config already written beside the output on all of them.
SAMPLE_DEFINING_FIELDS = (
    "model",
    "name",
    "prompts",
    "num_samples",
    "max_prompts",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "use_chat_template",
    "max_prompt_tokens",
    "backend",
    "share_prompt_cache",
    "strategy",
    "prompts_format",
    "prompts_columns",
)
#: Settings of one strategy only: a resumed run must agree on those of its own strategy.
STRATEGY_FIELDS = {"iterative": "iterative", "verbalized": "verbalized"}


class GenerateConfig(StageConfig):
    """Settings of ``divtune generate``; decoding defaults are the paper's (docs/method.md §7)."""

    LATE_SETTINGS: ClassVar[tuple[str, ...]] = ("prompts_format", "prompts_columns")

    model: str
    prompts: str
    output: str
    #: A data file of prompts is read as ``prepare`` reads it: its layout (``--format``) and
    #: column names (``--column NAME=SOURCE``).
    prompts_format: Literal["auto", "reddit", "pools", "flat"] = "auto"
    prompts_columns: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    num_samples: int = Field(4, ge=1)
    max_prompts: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    #: Prompts longer than this many tokens keep their start (a few Reddit posts
    #: carry a whole story as their text: thousands of tokens that would dominate
    #: the padded batch's prefill). ``null`` keeps every prompt whole.
    max_prompt_tokens: int | None = Field(512, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.1, gt=0.0)
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    backend: Literal["hf", "vllm"] = "hf"
    use_chat_template: bool = True
    #: HF backend: run each distinct prompt of a batch through the model once and
    #: share its KV cache among that prompt's samples, instead of once per sample.
    #: Same outputs under greedy decoding; with 16 samples of a 50-token prompt
    #: and 32 new tokens it was 1.4x faster on a 2-core CPU (benchmarks/bench_generate.py).
    share_prompt_cache: bool = True
    #: ``independent``: every sample on its own (the default); ``iterative``: sample k
    #: sees samples 1..k-1 of its prompt; ``verbalized``: one call asks for several
    #: responses with probabilities (divtune.strategies; docs/generate.md).
    strategy: Literal["independent", "iterative", "verbalized"] = "independent"
    iterative: IterativeSettings = Field(default_factory=IterativeSettings)
    verbalized: VerbalizedSettings = Field(default_factory=VerbalizedSettings)
    #: ``--backend vllm`` engine settings (context length, GPUs, memory; docs/generate.md).
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    show_progress: bool = True


@dataclass(frozen=True)
class Prompt:
    prompt_id: Any
    prompt: str


# --------------------------------------------------------------------------- prompts


def read_prompts(
    source: str | Path, max_prompts: int | None = None, layout: str = "auto", columns: dict[str, str] | None = None
) -> list[Prompt]:
    """Prompts from any supported source, in file order, optionally the first ``max_prompts``.

    - a prepared folder: its ``test.jsonl``;
    - a prepared ``test.jsonl``/``train.jsonl`` (pairs): unique prompts by ``pool_id``;
    - a prepared ``responses.jsonl``: its test pools, prompt text from ``test.jsonl`` beside it;
    - a JSONL list with a ``prompt`` field (optional ``prompt_id``, else the line number);
    - a data file as ``prepare`` reads it (CSV/TSV, Parquet, a ``datasets`` folder, or JSONL in
      one of its layouts or with ``columns`` mapped): each distinct prompt once, with the id
      prepare gives its pool (divtune.data.loading.load_prompts);
    - a plain text file: one prompt per line, ``prompt_id`` = line number.
    """
    path = Path(source)
    if path.is_dir() and (path / "test.jsonl").is_file():
        path = path / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    kind = _prompt_file_kind(path)
    if columns and kind in ("prepared", "text"):
        what = "a plain text file" if kind == "text" else "a prepared file"
        raise ConfigError(f"--column maps the columns of a data file; {path} is {what}")
    if kind == "data" or (kind == "jsonl" and (columns or layout != "auto" or _is_raw_layout(path))):
        from divtune.data.loading import load_prompts

        prompts = [Prompt(pool_id, prompt) for pool_id, prompt in load_prompts(path, layout, columns)]
    elif kind in ("jsonl", "prepared"):
        prompts = _read_jsonl_prompts(path)
    else:
        prompts = _read_text_prompts(path)
    if not prompts:
        raise InputError(path, "no prompts found")
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    return prompts


def _prompt_file_kind(path: Path) -> str:
    """``prepared`` (a stage's JSONL), ``jsonl``, ``data`` (CSV, Parquet, datasets folder) or ``text``."""
    from divtune.data.readers import detect_file_format

    if path.is_dir():
        return "data"  # detect_file_format refuses a folder that is not a datasets folder
    if path.name in ("test.jsonl", "train.jsonl", "responses.jsonl") and (path.parent / "responses.jsonl").is_file():
        return "prepared"
    try:
        fmt = detect_file_format(path)
    except InputError:
        return "text"
    return "jsonl" if fmt == "jsonl" else "data"


def _is_raw_layout(path: Path) -> bool:
    """A JSONL file whose first line fits one of prepare's layouts (or has a reddit ``post_title``)."""
    from divtune.data.layouts import RowError, detect_layout

    first = next(iter_jsonl(path), None)
    if first is None or not isinstance(first[1], dict):
        return False
    try:
        detect_layout(set(first[1]))
        return True
    except RowError:
        return "post_title" in first[1]


def _read_text_prompts(path: Path) -> list[Prompt]:
    from divtune.io import undecodable_error

    prompts, blank = [], 0
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                text = line.strip()
                if not text:
                    blank += 1
                    continue
                prompts.append(Prompt(lineno, text))
    except UnicodeDecodeError:
        raise undecodable_error(path) from None
    if blank:
        logger.info("%s: skipped %d blank lines", path, blank)
    return prompts


def _read_jsonl_prompts(path: Path) -> list[Prompt]:
    rows = iter_jsonl(path)
    first = next(rows, None)
    if first is None:
        return []
    lineno, obj = first
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    rows = _chain([first], rows)
    if "prompt" not in obj and "pool_id" in obj and "split" in obj:
        return _read_responses_prompts(path, rows)
    if "pool_id" in obj and "prompt" in obj:
        return _read_pair_prompts(path, rows)
    return _read_prompt_list(path, rows)


def _chain(head: list, tail: Iterable) -> Iterable:
    yield from head
    yield from tail


def _require_str(path: Path, lineno: int, obj: Any, field: str) -> str:
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    if field not in obj:
        raise InputError(path, "missing field", line=lineno, field=field)
    value = obj[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, f"must be a non-empty string, got {value!r:.60}", line=lineno, field=field)
    return value


def _read_pair_prompts(path: Path, rows) -> list[Prompt]:
    """Prepared pairs: several lines share a pool; keep one prompt per pool_id."""
    by_pool: dict[Any, str] = {}
    for lineno, obj in rows:
        prompt = _require_str(path, lineno, obj, "prompt")
        pool_id = obj.get("pool_id")
        if pool_id is None:
            raise InputError(path, "missing field", line=lineno, field="pool_id")
        if by_pool.setdefault(pool_id, prompt) != prompt:
            raise InputError(path, f"pool {pool_id!r} has two different prompts", line=lineno, field="prompt")
    return [Prompt(pool_id, prompt) for pool_id, prompt in by_pool.items()]


def _read_responses_prompts(path: Path, rows) -> list[Prompt]:
    """``responses.jsonl`` holds pool ids but no prompt text: join with ``test.jsonl`` beside it."""
    test_pools: list[Any] = []
    seen: set = set()
    for lineno, obj in rows:
        if not isinstance(obj, dict) or "pool_id" not in obj:
            raise InputError(path, "missing field", line=lineno, field="pool_id")
        if obj.get("split") == "test" and obj["pool_id"] not in seen:
            seen.add(obj["pool_id"])
            test_pools.append(obj["pool_id"])
    pairs_path = path.parent / "test.jsonl"
    if not pairs_path.is_file():
        raise InputError(path, f"has no prompt text and {pairs_path} (where it is looked up) is missing")
    texts = {p.prompt_id: p.prompt for p in _read_pair_prompts(pairs_path, iter_jsonl(pairs_path))}
    missing = [pool for pool in test_pools if pool not in texts]
    if missing:
        # Pools with responses but no pair have no prompt text anywhere: say so, don't drop silently.
        logger.warning("%s: %d test pools have no prompt in %s and are skipped (e.g. %r)",
                       path, len(missing), pairs_path, missing[0])
    return [Prompt(pool, texts[pool]) for pool in test_pools if pool in texts]


def _read_prompt_list(path: Path, rows) -> list[Prompt]:
    prompts: list[Prompt] = []
    seen: dict[Any, int] = {}
    for lineno, obj in rows:
        prompt = _require_str(path, lineno, obj, "prompt")
        prompt_id = obj.get("prompt_id", lineno)
        if prompt_id in seen:
            raise InputError(path, f"duplicate prompt_id {prompt_id!r} (first on line {seen[prompt_id]})",
                             line=lineno, field="prompt_id")
        seen[prompt_id] = lineno
        prompts.append(Prompt(prompt_id, prompt))
    return prompts


# --------------------------------------------------------------------------- seeds and work plan


def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(json.dumps(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def batch_seed(seed: int, batch_index: int) -> int:
    """Torch seed of batch ``batch_index`` (HF backend)."""
    return _derive_seed("batch", seed, batch_index)


def sample_seed(seed: int, prompt_id: Any, sample_index: int) -> int:
    """Per-request seed (vllm backend): independent of batching."""
    return _derive_seed("sample", seed, prompt_id, sample_index)


def plan_batches(n_prompts: int, num_samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """All (prompt position, sample_index) items in prompt order, cut into batches."""
    items = [(p, s) for p in range(n_prompts) for s in range(num_samples)]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


# --------------------------------------------------------------------------- resumable output


def cut_torn_line(path: Path) -> None:
    """Cut off an unterminated last line, left by a run killed while appending."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: cutting off a torn last line (%d bytes) left by an interrupted run",
                       path, len(data) - end)
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())


def load_done(output: Path) -> set[tuple[str, int]]:
    """Keys of the samples already written; a torn (unterminated) last line is cut off."""
    if not output.is_file():
        return set()
    cut_torn_line(output)
    done = set()
    for lineno, obj in iter_jsonl(output):
        for field in ("prompt_id", "sample_index"):
            if field not in obj:
                raise InputError(output, "existing generations line lacks a field", line=lineno, field=field)
        done.add(sample_key(obj["prompt_id"], obj["sample_index"]))
    return done


def sample_key(prompt_id: Any, sample_index: int) -> tuple[str, int]:
    # JSON round-trips keep types, but key on the JSON text so 1 and "1" stay distinct.
    return json.dumps(prompt_id), int(sample_index)


def append_rows(output: Path, rows: list[dict]) -> None:
    """Append a finished batch and make it durable before the next one starts."""
    with open(output, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def system_name(cfg: GenerateConfig) -> str:
    """The ``model`` field of every line: ``--name``, else the model folder/file stem or hub id.

    A strategy other than ``independent`` is part of the name (``base-iterative``):
    it is appended unless the name already contains it, so reports never show a
    prompting baseline under the bare model's name.
    """
    if cfg.name:
        name = cfg.name
    else:
        spec = cfg.model.rstrip("/")
        path = Path(spec)
        name = path.stem if path.suffix == ".gguf" else (path.name or spec)
    if cfg.strategy != "independent" and cfg.strategy not in name:
        name = f"{name}-{cfg.strategy}"
    return name


# --------------------------------------------------------------------------- run


def run_generate(cfg: GenerateConfig, stop_after_batches: int | None = None, overwrite: bool = False) -> Path:
    """Sample ``num_samples`` responses per prompt; returns the generations file.

    ``stop_after_batches`` stops after that many newly written batches (used to
    simulate an interrupted run in tests). The output follows divtune.outputs'
    rule for single files: nothing is written before the prompts and the model
    spec are checked; a file started with other settings is refused unless
    ``overwrite``; one with the same settings is resumed.
    """
    from divtune.models import check_model_spec
    from divtune.outputs import claim_output_file, sidecar_path

    output = Path(cfg.output)
    if cfg.strategy != "independent" and cfg.backend != "hf":
        raise ConfigError(f"--strategy {cfg.strategy} runs on --backend hf only (vllm: independent sampling)")
    prompts = read_prompts(cfg.prompts, cfg.max_prompts, cfg.prompts_format, cfg.prompts_columns)
    check_model_spec(cfg.model)
    fields = list(SAMPLE_DEFINING_FIELDS)
    if cfg.strategy in STRATEGY_FIELDS:
        fields.append(STRATEGY_FIELDS[cfg.strategy])
    late = {name: GenerateConfig.model_fields[name].get_default(call_default_factory=True)
            for name in GenerateConfig.LATE_SETTINGS}
    state = claim_output_file(output, cfg.model_dump(mode="json"), fields, overwrite, defaults=late)
    if state == "replace":
        output.unlink()
    output.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(sidecar_path(output))
    if cfg.strategy != "independent":
        from divtune.strategies.run import run_strategy

        summary = run_strategy(cfg, prompts, output, HFSampler(cfg), stop_after_batches)
        write_json(summary_path(output), summary)
        check_strategy_yield(cfg, summary, output, finished=stop_after_batches is None)
        return output
    done = load_done(output)
    batches = plan_batches(len(prompts), cfg.num_samples, cfg.batch_size)
    todo = [
        (k, batch) for k, batch in enumerate(batches)
        if any(sample_key(prompts[p].prompt_id, s) not in done for p, s in batch)
    ]
    total = len(prompts) * cfg.num_samples
    logger.info("%d prompts x %d samples: %d already in %s, %d batches to run",
                len(prompts), cfg.num_samples, len(done), output, len(todo))
    if todo and cfg.backend == "vllm":
        _run_vllm(cfg, prompts, done, output)
    elif todo:
        _run_hf(cfg, prompts, todo, done, output, total, stop_after_batches)
    write_json(summary_path(output), count_summary(cfg, prompts, output))
    return output


def check_strategy_yield(cfg: GenerateConfig, summary: dict, output: Path, finished: bool = True) -> None:
    """Stop (InputError) when a verbalized run gave no sample at all; warn when some replies gave none."""
    if cfg.strategy != "verbalized" or not finished:
        return
    from divtune.stage_yield import verbalized_problem, verbalized_warning

    problem = verbalized_problem(summary)
    if problem:
        raise InputError(output, problem)
    warning = verbalized_warning(summary)
    if warning:
        logger.warning(warning)


def summary_path(output: Path) -> Path:
    """``FILE.summary.json``: what the generations file holds and, per strategy, what was dropped and why."""
    return output.with_name(output.name + ".summary.json")


def count_summary(cfg: GenerateConfig, prompts: list[Prompt], output: Path) -> dict:
    """Samples per prompt found in ``output``; prompts with fewer than ``num_samples`` are listed."""
    per_prompt: dict[str, int] = {json.dumps(p.prompt_id): 0 for p in prompts}
    if output.is_file():
        for _, obj in iter_jsonl(output):
            key = json.dumps(obj.get("prompt_id"))
            if key in per_prompt:
                per_prompt[key] += 1
    short = {key: n for key, n in per_prompt.items() if n < cfg.num_samples}
    return {
        "strategy": cfg.strategy,
        "model": system_name(cfg),
        "prompts": len(prompts),
        "samples_per_prompt": cfg.num_samples,
        "samples": sum(per_prompt.values()),
        "prompts_short": [{"prompt_id": json.loads(key), "samples": n} for key, n in short.items()],
    }


def _row(cfg: GenerateConfig, prompt: Prompt, sample_index: int, text: str, seed: int, n_tokens: int,
         **extra: Any) -> dict:
    return {
        "prompt_id": prompt.prompt_id,
        "prompt": prompt.prompt,
        "sample_index": sample_index,
        "text": text,
        "model": system_name(cfg),
        "seed": seed,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "max_new_tokens": cfg.max_new_tokens,
        "num_new_tokens": n_tokens,
        "strategy": cfg.strategy,
        **extra,
    }


def truncate_prompt(tokenizer, prompt: str, max_tokens: int | None) -> tuple[str, bool]:
    """The prompt cut to its first ``max_tokens`` tokens; also whether it was cut."""
    if max_tokens is None:
        return prompt, False
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt, False
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), True


def format_prompts(tokenizer, prompts, cfg) -> list[str]:
    """Every prompt truncated (counted in the log) and formatted as the model sees it."""
    formatted = []
    n_cut = 0
    for p in prompts:
        text, cut = truncate_prompt(tokenizer, p.prompt, cfg.max_prompt_tokens)
        n_cut += cut
        formatted.append(format_prompt(tokenizer, text, cfg.use_chat_template))
    if n_cut:
        logger.info("%d of %d prompts are longer than max_prompt_tokens=%d and keep their start",
                    n_cut, len(prompts), cfg.max_prompt_tokens)
    return formatted


def encode_prompts(tokenizer, formatted: list[str], use_chat_template: bool = True) -> list[list[int]]:
    """Token ids of formatted prompts, exactly as both backends feed them to the model.

    A chat template writes its own special tokens (Llama-3's starts with
    ``{{ bos_token }}``), so none are added again; a plain prompt gets the
    tokenizer's own (its BOS, if it adds one).
    """
    add_special = not (use_chat_template and getattr(tokenizer, "chat_template", None))
    return [list(ids) for ids in tokenizer(formatted, add_special_tokens=add_special)["input_ids"]]


def prompt_token_ids(tokenizer, prompts, cfg) -> list[list[int]]:
    """Every prompt truncated, formatted and tokenised: the ids the model is fed (HF and vllm backends)."""
    return encode_prompts(tokenizer, format_prompts(tokenizer, prompts, cfg), cfg.use_chat_template)


def pad_left(ids: list[list[int]], pad_token_id: int, device=None) -> dict:
    """A left-padded batch (``input_ids``, ``attention_mask``), as the tokenizer pads with ``padding_side="left"``."""
    import torch

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


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    """The prompt as the model sees it: a user turn of the chat template when there is one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt


def _torch_dtype(name: str, device: str):
    import torch

    from divtune.models import default_dtype

    if name == "auto":
        return default_dtype(device)
    return getattr(torch, name)


class HFSampler:
    """The HF model and tokenizer of a config, and seeded batch sampling with its decoding settings."""

    def __init__(self, cfg: GenerateConfig):
        from divtune.models import default_device, load_tokenizer

        self.cfg = cfg
        self.device = cfg.device or default_device()
        self.tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")
        self._model = None

    @property
    def model(self):
        """Loaded on first use, so a resumed run with nothing left to sample never loads it."""
        if self._model is None:
            from divtune.models import load_causal_lm

            self._model = load_causal_lm(
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
        import torch

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


def _run_hf(cfg, prompts, todo, done, output, total, stop_after_batches) -> None:
    from tqdm.auto import tqdm

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
            rows.append(_row(cfg, prompts[p], s, text, seed, n_tokens))
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
    import torch
    from transformers import DynamicCache

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


def _run_vllm(cfg: GenerateConfig, prompts: list[Prompt], done: set, output: Path) -> None:
    """Thin caller of divtune.vllm_requests: vLLM objects made from the builder's plain dicts."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise ConfigError(
            "--backend vllm needs vLLM (GPU), which is not installed here; vLLM pins a transformers other than "
            "divtune's, so it gets its own environment: see 'vLLM environment' in docs/generate.md, "
            "or use --backend hf"
        ) from None
    from tqdm.auto import tqdm

    from divtune.models import load_tokenizer
    from divtune.vllm_requests import build_vllm_request, plan_model

    plan = plan_model(cfg.model)
    # The tokenizer and prompt ids of the HF path, so both backends see the same tokens.
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, padding_side="left")
    prompt_ids = prompt_token_ids(tokenizer, prompts, cfg)
    items = [(p, s, sample_seed(cfg.seed, prompts[p].prompt_id, s))
             for p in range(len(prompts)) for s in range(cfg.num_samples)
             if sample_key(prompts[p].prompt_id, s) not in done]
    request = build_vllm_request(cfg, plan, prompt_ids, items)
    logger.info("vllm engine: %s", {k: v for k, v in request.engine.items() if k != "trust_remote_code"})
    llm = LLM(**request.engine)
    lora = LoRARequest(**request.lora) if request.lora else None
    # vllm schedules its own batches; chunks only bound how much is lost on interruption.
    chunk = cfg.vllm.chunk_size
    progress = tqdm(total=len(items), desc="generate (vllm)", unit="sample", disable=not cfg.show_progress)
    for start in range(0, len(request.requests), chunk):
        part = request.requests[start : start + chunk]
        results = llm.generate(
            [r["prompt"] for r in part], [SamplingParams(**r["sampling"]) for r in part],
            use_tqdm=False, lora_request=lora,
        )
        rows = [
            _row(cfg, prompts[r["prompt_index"]], r["sample_index"], result.outputs[0].text.strip(), r["seed"],
                 len(result.outputs[0].token_ids))
            for r, result in zip(part, results)
        ]
        append_rows(output, rows)
        progress.update(len(rows))
    progress.close()
