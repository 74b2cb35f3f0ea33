"""The control's two contrasts that the experiment's report does not draw (its compare_to is DDPO-sem).

Run from the project root after `divtune experiment configs/experiments/typicality_stepsize.yaml`:
    python docs/results/typicality_stepsize/extra/contrasts.py
It writes dpo-lr56_vs_dpo.json and dpo-lr56_vs_base.json here: the same paired, pooled two-way
bootstrap (1000 draws, seed 0) that the experiment's report uses, against DPO at 1e-3 and against base.
"""
import json
import tempfile
from pathlib import Path

from divtune.reporting.run import run_report

HERE = Path(__file__).parent
CONTROL = "dpo-lr56-bX"
SEEDS = (0, 1, 2)

for tag, baseline in (("dpo", "dpo-bX"), ("base", "base")):
    comparisons = {CONTROL: baseline, **{f"{CONTROL}-s{s}": f"{baseline}-s{s}" for s in SEEDS}}
    groups = {name: [f"{name}-s{s}" for s in SEEDS] for name in (CONTROL, baseline)}
    with tempfile.TemporaryDirectory() as tmp:
        run_report(["runs/typicality/eval"], Path(tmp) / "report", comparisons=comparisons, seed_groups=groups)
        paired = json.loads((Path(tmp) / "report" / "paired_differences.json").read_text())
    (HERE / f"dpo-lr56_vs_{tag}.json").write_text(json.dumps(paired, indent=1) + "\n")
    row = paired[CONTROL]["metrics"]["semantic_diversity"]
    print(f"{CONTROL} - {baseline}: semantic diversity {row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]")
