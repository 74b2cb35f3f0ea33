"""scripts/gpu_smoke.py in its CPU mode: every check is in the summary, passed or skipped with a
reason (what a CPU cannot run), none failed, within the 5 minutes the script promises on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"
#: What the CPU mode must run (not skip): everything but bf16, DeepSpeed, FSDP itself, QLoRA, flash attention.
RUN_ON_CPU = {
    *(f"train/{m}/{kind}" for m in ("sft", "dpo", "ddpo", "orpo", "dorpo", "divpo") for kind in ("lora", "full")),
    "ddpo_split/fp32", "precompute_ref/miss_hit", "sft_then_dpo_init",
    "online/grpo", "online/dqo", "online/darling", "generate/prompt_cache", "generate/resume",
}
CPU_BUDGET_SECONDS = 300


def script_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([*(extra.pop("PREPEND", "").split(os.pathsep)), str(ROOT / "src"),
                                          env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.update(extra)
    return env


def listed_checks() -> list[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow
def test_cpu_mode_passes_or_skips_every_check_with_a_reason(tmp_path):
    out = tmp_path / "cpu_smoke.json"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--workdir", str(tmp_path / "work")],
        env=script_env(), capture_output=True, text=True, timeout=CPU_BUDGET_SECONDS + 60,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert elapsed < CPU_BUDGET_SECONDS, f"the CPU mode took {elapsed:.0f} s"
    summary = json.loads(out.read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    assert list(checks) == listed_checks()
    assert summary["environment"]["device"] == "cpu"
    assert summary["counts"]["failed"] == 0
    for name, check in checks.items():
        assert check["status"] in ("passed", "skipped"), (name, check)
        if check["status"] == "skipped":
            assert check["reason"].strip(), name
        else:
            assert check["peak_memory_mib"] > 0 and check["seconds"] > 0, (name, check)
    assert {n for n, c in checks.items() if c["status"] == "passed"} == RUN_ON_CPU, done.stdout
    # Training checks report their throughput; the split and cache checks their numbers.
    assert all(checks[f"train/{m}/lora"]["samples_per_second"] > 0 for m in ("sft", "ddpo", "dorpo"))
    assert checks["ddpo_split/fp32"]["details"]["adapter_max_relative_error"] <= 1e-4
    assert checks["precompute_ref/miss_hit"]["details"]["hits"] == [False, True]
    # FSDP itself cannot run on CPU, but the launch ran and the policy loaded with its low-memory loading.
    fsdp = checks["accelerate/fsdp"]
    assert fsdp["status"] == "skipped" and fsdp["details"]["load"]["fsdp_low_memory_loading"] is True
    print(f"gpu_smoke CPU mode: {elapsed:.0f} s wall, {summary['counts']}")


def test_a_missing_import_is_one_clear_line(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "trl.py").write_text("raise ImportError('No module named trl')\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path / "s.json")],
        env=script_env(PREPEND=str(blocked)), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_smoke: cannot import trl (No module named trl); install trl==1.16.* "
        "(offline: see `pip download ... -d .whl` in this script's docstring)"
    ]
    assert not (tmp_path / "s.json").exists()
