"""Running an experiment's stages: in order in this process, or several at once in worker processes.

Either way a stage already done with the same settings is reused, and a stage without a valid
marker (killed, never run, or run with other settings) is run again: training and generation
resume from their own checkpoints inside its folder. ``stop_on_sigterm`` turns ``kill`` into an
exception, so a stopped run still records its invocation.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from divtune.experiments.stage import Stage
from divtune.io import clear_stage_done, mark_stage_done, read_stage_done
from divtune.outputs import adopt_folder


def _log(message: str) -> None:
    print(f"[divtune] {message}", file=sys.stderr, flush=True)


def run_stages(stages: list[Stage], fresh: bool = False) -> dict[str, float]:
    """Run stages in order, skipping those already done with the same config.

    Returns seconds spent per stage (0 for skipped ones).
    """
    timings: dict[str, float] = {}
    for position, stage in enumerate(stages, start=1):
        label = f"[{position}/{len(stages)}] {stage.name}"
        if fresh and stage.directory.exists():
            shutil.rmtree(stage.directory)
        if stage.is_done():
            _log(f"{label}: done already, reusing {stage.directory}")
            timings[stage.name] = 0.0
            continue
        # A stage without a valid marker was killed, never run, or run with
        # another config: clear the marker and run it again (training and
        # generation resume from their own checkpoints inside the folder;
        # the stages are called with overwrite=True: the folder is the experiment's).
        clear_stage_done(stage.directory)
        adopt_folder(stage.directory)
        _log(f"{label} → {stage.directory}")
        start = time.perf_counter()
        stage.run()
        timings[stage.name] = time.perf_counter() - start
        # Added to the stage's own marker (which names the stage and its settings), not in place of it.
        record = read_stage_done(stage.directory) or {}
        mark_stage_done(
            stage.directory,
            {**record, "fingerprint": stage.fingerprint, "seconds": timings[stage.name], "finished_at": time.time()},
        )
        _log(f"{label}: finished in {timings[stage.name]:.0f} s")
    return timings


def ready_stages(stages: list[Stage], done: set[str], started: set[str]) -> list[Stage]:
    """Stages not started yet whose ``after`` stages are all done, in list order."""
    return [s for s in stages if s.name not in started and all(d in done for d in s.after)]


class _Workers:
    """The worker processes of one parallel run: which stage runs in which slot, and how each ended.

    Slot k of ``jobs`` hands its worker ``gpus[k]`` (when given); a finished worker frees its slot.
    """

    def __init__(
        self, stages: list[Stage], config_path: Path, log_dir: Path, jobs: int, env: dict[str, str],
        gpus: list[list[str]] | None,
    ):
        self.stages, self.config_path, self.log_dir, self.jobs, self.env, self.gpus = (
            stages, config_path, log_dir, jobs, env, gpus
        )
        self.timings: dict[str, float] = {}
        self.done: set[str] = set()
        for stage in stages:
            if stage.is_done():
                _log(f"{stage.name}: done already, reusing {stage.directory}")
                self.done.add(stage.name)
                self.timings[stage.name] = 0.0
        self.started = set(self.done)
        self.running: dict[str, tuple[Any, float, Path]] = {}
        self.free_slots = list(range(jobs))
        self.slot_of: dict[str, int] = {}
        self.failed: list[str] = []

    def unsettled(self) -> bool:
        return len(self.done) + len(self.failed) < len(self.stages)

    def start_ready(self) -> None:
        """A worker for each stage whose inputs are done, while slots are free."""
        for stage in ready_stages(self.stages, self.done, self.started)[: self.jobs - len(self.running)]:
            self.start(stage)

    def start(self, stage: Stage) -> None:
        log_path = self.log_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", stage.name) + ".log")
        command = [sys.executable, "-m", "divtune", "experiment", str(self.config_path), "--stage", stage.name]
        slot = self.slot_of[stage.name] = self.free_slots.pop(0)
        gpus = None if self.gpus is None else self.gpus[slot]
        stage_env = self.env if gpus is None else dict(self.env, CUDA_VISIBLE_DEVICES=",".join(gpus))
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=stage_env)
        self.running[stage.name] = (process, time.perf_counter(), log_path)
        self.started.add(stage.name)
        on_gpus = "" if gpus is None else f", GPUs {','.join(gpus)}"
        _log(f"{stage.name} → {stage.directory} (worker {process.pid}{on_gpus}, log {log_path})")

    def collect_finished(self) -> None:
        """Free the slots of the workers that exited; a stage counts as done only if it marked itself so."""
        for name, (process, start, log_path) in list(self.running.items()):
            if process.poll() is None:
                continue
            del self.running[name]
            self.free_slots.append(self.slot_of.pop(name))
            self.free_slots.sort()
            stage = next(s for s in self.stages if s.name == name)
            if process.returncode == 0 and stage.is_done():
                self.done.add(name)
                self.timings[name] = time.perf_counter() - start
                _log(f"{name}: finished in {self.timings[name]:.0f} s")
            else:
                self.failed.append(name)
                _log(f"{name}: FAILED (exit {process.returncode}); see {log_path}")

    def stop(self) -> None:
        """Stopped (SIGTERM, Ctrl-C): the workers stop too instead of running on unwatched."""
        for process, _, _ in self.running.values():
            process.terminate()
        for process, _, _ in self.running.values():
            process.wait(timeout=30)


def run_stages_parallel(
    stages: list[Stage], config_path: Path, jobs: int, fresh: bool = False, threads: int | None = None,
    gpus: list[list[str]] | None = None,
) -> dict[str, float]:
    """Run stages in ``jobs`` worker processes at once, each stage when the stages it reads are done.

    Each worker is ``divtune experiment CONFIG --stage NAME`` on the resolved
    config, with ``threads`` torch threads (default: the cores divided among
    the jobs). Whether this pays off depends on the machine: on the 2-core CPU
    here, two one-thread trainings of SmolLM2 side by side ran at 0.65x the
    throughput of one two-thread training (benchmarks/bench_jobs.py measures
    it anywhere). A worker's log is ``<output>/logs/<stage>.log``. ``gpus`` (from
    :func:`divtune.experiments.gpus.partition_gpus`): one list of GPU ids per worker slot; a stage
    started in slot k sees only slot k's GPUs (``CUDA_VISIBLE_DEVICES``).
    Finished stages are reused exactly as in :func:`run_stages`. If a stage
    fails, running workers finish, nothing new starts, and the error names its log.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    names = {s.name for s in stages}
    for stage in stages:
        unknown = [d for d in stage.after if d not in names]
        if unknown:
            raise ValueError(f"stage {stage.name!r} waits for unknown stages {unknown}")
    if fresh:
        for stage in stages:
            if stage.directory.exists():
                shutil.rmtree(stage.directory)
    log_dir = config_path.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), DIVTUNE_TORCH_THREADS=str(threads))
    workers = _Workers(stages, config_path, log_dir, jobs, env, gpus)
    try:
        while workers.unsettled():
            if not workers.failed:
                workers.start_ready()
            if not workers.running:
                if workers.failed:
                    break
                blocked = [s.name for s in stages if s.name not in workers.started]
                raise RuntimeError(f"stages {blocked} wait for stages that never finish; check their `after`")
            time.sleep(0.5)
            workers.collect_finished()
    except BaseException:
        workers.stop()
        raise
    if workers.failed:
        raise RuntimeError(f"stages failed: {', '.join(workers.failed)}; see their logs in {log_dir}")
    return workers.timings


@contextlib.contextmanager
def stop_on_sigterm():
    """Turn SIGTERM into ``SystemExit(143)`` while stages run, so a run stopped by ``kill``, a
    machine shutting down or a CI timeout still records its invocation in ``run.json``.

    (A run started in the background by a non-interactive shell ignores SIGINT, so SIGTERM is
    how it is stopped.) Outside the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
