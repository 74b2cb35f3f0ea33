"""Experiments: the whole pipeline (prepare → reward model → train each system → generate →
evaluate → report) composed from the stage functions, stage by stage, resumable.

Every stage writes into its own folder under the experiment's output and is marked done (with a
hash of its resolved config) only after it finished, so a rerun skips finished stages, redoes a
stage whose config changed, and redoes a stage that was killed halfway (training resumes from its
last checkpoint and generation from its last written sample, by those stages' own resume logic).
``divtune quickstart`` is a small built-in experiment.

The package, a module per idea: ``config`` (the YAML), ``plan`` (the stage graph), ``stage`` (one
stage and its done marker), ``schedule`` (running stages, in order or in worker processes),
``gpus`` (the GPUs of each worker), ``record`` (the output folder and ``run.json``), ``run`` (an
experiment end to end), ``check`` (``--check``), ``carry`` (``--pack``/``--unpack``), ``publish``
(``--publish``), ``comparisons`` and ``summary`` (what the report compares, a demonstration's caveat).
Its public names are importable from here.
"""

from divtune.experiments.check import check_config
from divtune.experiments.comparisons import report_comparisons, report_interactions
from divtune.experiments.config import ExperimentConfig, SystemSpec
from divtune.experiments.gpus import partition_gpus, visible_gpus
from divtune.experiments.plan import build_stages
from divtune.experiments.publish import publish_results
from divtune.experiments.run import run_experiment, run_one_stage
from divtune.experiments.schedule import ready_stages, run_stages, run_stages_parallel
from divtune.experiments.stage import Stage
from divtune.experiments.summary import demonstration_caveat

__all__ = [
    "ExperimentConfig", "Stage", "SystemSpec", "build_stages", "check_config", "demonstration_caveat",
    "partition_gpus", "publish_results", "ready_stages", "report_comparisons", "report_interactions", "run_experiment",
    "run_one_stage", "run_stages", "run_stages_parallel", "visible_gpus",
]
