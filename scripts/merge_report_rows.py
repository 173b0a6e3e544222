"""Add the AdvGAN (or patch) rows of a separate evaluation run to an existing report.

A full report takes hours on a small machine; the AdvGAN rows of the same model, data, examples,
chains, ε grid, seed and verdict draws can be measured afterwards by ``fencebox evaluate --attacks
advgan`` into a folder of their own, and merged here instead of rerunning everything.  The merge
refuses runs that differ in anything that decides a number, copies the saved adversarials next to
the report's own (``fencebox replay`` re-judges them all), records where the rows came from under
``config.merged`` (folder, rows, the run's own config and environment), and rewrites report.json,
report.md and report.html.

  python scripts/merge_report_rows.py REPORT_DIR RUN_DIR [--rows advgan_results] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from fencebox.harness.report import write_report

MUST_MATCH = ("model", "data", "n", "index", "eps", "eps_l2", "seed", "select_draws", "score_draws", "device")
"""Config fields the run must share with the report (the examples, the budget grid, the verdict)."""
ROW_KINDS = ("advgan_results", "patch_results")


def check_compatible(report: dict[str, Any], run: dict[str, Any]) -> None:
    """SystemExit naming every field where the run's config differs from the report's."""
    a, b = report["config"], run["config"]
    bad = [f"{k}: report {a.get(k)!r}, run {b.get(k)!r}" for k in MUST_MATCH if a.get(k) != b.get(k)]
    for name, spec in (b.get("chain_specs") or {}).items():
        if (a.get("chain_specs") or {}).get(name) != spec:
            bad.append(f"chain {name}: report {(a.get('chain_specs') or {}).get(name)!r}, run {spec!r}")
    if bad:
        raise SystemExit("the run does not match the report:\n  " + "\n  ".join(bad))


def load_report(folder: Path) -> dict[str, Any]:
    """The report.json of ``folder``; SystemExit saying what is wrong when it is missing or not a report."""
    path = folder / "report.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"no report.json in {folder}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise SystemExit(f"{path} is not a fencebox evaluation report (no config)")
    return doc


def merge(report_dir: Path, run_dir: Path, kind: str, note: str | None) -> dict[str, Any]:
    """Merge the run's ``kind`` rows into the report (replacing rows of that kind) and rewrite it.

    Everything is checked before anything is written: a refused merge leaves the report as it was.
    """
    report, run = load_report(report_dir), load_report(run_dir)
    check_compatible(report, run)
    rows = run.get(kind) or []
    if not rows:
        raise SystemExit(f"{run_dir / 'report.json'} has no {kind}")
    files = [str(((row.get("verdict") or {}).get("adversarials") or {}).get("file") or "") for row in rows]
    for name in filter(None, files):
        target = report_dir / name
        if not (run_dir / name).is_file():
            raise SystemExit(f"{run_dir / name} is missing: the run's saved adversarials must come with it")
        if target.exists() and not target.name.startswith(("advgan-", "patch-")):
            raise SystemExit(f"{target} exists and is not a {kind} file: refusing to overwrite it")
    for name in filter(None, files):
        (report_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / name, report_dir / name)
    report[kind] = rows
    for key in ("train_images", "advgan_epochs", "patch_steps"):
        if key in run["config"]:
            report["config"][key] = run["config"][key]
    merged = [m for m in report["config"].get("merged", []) if m.get("rows") != kind]
    merged.append(
        {
            "rows": kind,
            "from": str(run_dir),
            "note": note,
            "config": {k: v for k, v in run["config"].items() if k != "index"},
            "environment": run.get("environment"),
        }
    )
    report["config"]["merged"] = merged
    write_report(report, report_dir)
    return report


def main() -> None:
    """Parse arguments and merge."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="folder of the report to add rows to")
    p.add_argument("run", type=Path, help="folder of the evaluation run holding the rows")
    p.add_argument("--rows", choices=ROW_KINDS, default="advgan_results")
    p.add_argument("--note", default=None, help="provenance to record (e.g. the commit and command)")
    a = p.parse_args()
    doc = merge(a.report, a.run, a.rows, a.note)
    print(f"merged {len(doc[a.rows])} {a.rows} rows into {a.report / 'report.json'}")


if __name__ == "__main__":
    main()
