"""Interim look at the primary endpoint: evaluate + report only the endpoint systems (all 3 seeds),
and with --with-control also the b = 0 control systems.

Uses the pinned runner code and the experiment's own stage configs, with the evaluation and
report written to runs/typicality/interim/ (the experiment's eval/report stages are untouched).
"""
import sys
from pathlib import Path

import yaml

from divtune.evaluation.config import EvaluateConfig
from divtune.evaluation.run import run_evaluate
from divtune.experiments import ExperimentConfig, build_stages, report_comparisons
from divtune.reporting.run import run_report

ENDPOINT = {"base", "dpo-bX", "ddpo-sem-bX", "ddpo-both-bX"}
CONTROL = {"dpo-b0", "ddpo-sem-b0", "ddpo-both-b0"}
# --with-control: also the b = 0 control systems, into interim-control/.
WITH_CONTROL = "--with-control" in sys.argv
KEEP = ENDPOINT | CONTROL if WITH_CONTROL else ENDPOINT
raw = yaml.safe_load(Path("configs/experiments/typicality.yaml").read_text())
raw["systems"] = [s for s in raw["systems"] if s["name"] in KEEP]
cfg = ExperimentConfig.from_dict(raw)
stages, _ = build_stages(cfg)
evaluate = next(s for s in stages if s.name == "evaluate")
root = Path(cfg.output) / ("interim-control" if WITH_CONTROL else "interim")
fields = dict(evaluate.config)
fields["output"] = str(root / "eval")
ecfg = EvaluateConfig.from_dict(fields)
if "--report-only" not in sys.argv:
    run_evaluate(ecfg)
comparisons, groups = report_comparisons(cfg)
run_report([root / "eval"], root / "report", baseline=cfg.baseline, comparisons=comparisons, seed_groups=groups)
print("report:", root / "report" / "report.md")
