"""Print the robust-accuracy summary tables of reports (reports/*/report.json) as Markdown.

Used to write reports/README.md and the README's summary from the numbers the CLI measured:
``python scripts/summarize_reports.py reports/mnist reports/mnist-adv``.  Each cell is the robust
accuracy (mean over the scoring draws of each example's selected worst candidate); for random chains
the strict figure (correct on every scoring draw) follows in parentheses where it differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fencebox.harness.report import THREAT_ORDER as THREATS


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _cell(r: dict[str, Any], threat: str) -> str:
    text = _pct(r["robust_accuracy"])
    strict = r.get("strict_accuracy")
    if strict is not None and round(100 * strict) != round(100 * r["robust_accuracy"]):
        text += f" ({_pct(strict)} all draws)"
    q = r.get("queries") or {}
    if threat.startswith("blackbox") and q.get("median_to_success") is not None:
        text += f" ({q['median_to_success']:.0f} q)"
    if threat == "worst-case":
        lo, hi = r["ci95"]
        text += f" [{100 * lo:.0f}, {100 * hi:.0f}]"
    return text


def advgan_cells(rows: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """Per (chain, eps), the AdvGAN row a table shows: the per-example "worst of" row of the chain's
    gradient estimators, or the only row where the chain has one (never the row with the best result)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["chain"], r["eps"]), []).append(r)
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for key, group in groups.items():
        worst = [r for r in group if str(r["gradient"]).startswith("worst of")]
        if len(worst) != 1 and len(group) != 1:
            raise SystemExit(f"advgan rows {key}: {len(group)} estimator rows and no single 'worst of' row")
        out[key] = worst[0] if len(worst) == 1 else group[0]
    return out


def summarize(folder: Path) -> str:
    """One Markdown table: a row per chain and eps, a column per threat, black-box median queries;
    an ``advgan`` column (outside the worst case) when the report has AdvGAN rows."""
    report = json.loads((folder / "report.json").read_text())
    cfg = report["config"]
    rows: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for r in report["results"]:
        rows.setdefault((r["chain"], r["eps"]), {})[r["threat"]] = r
    for key, r in advgan_cells(report.get("advgan_results") or []).items():
        rows.setdefault(key, {})["advgan"] = r
    present = [t for t in [*THREATS, "advgan"] if any(t in by for by in rows.values())]
    head = ["chain", "clean", "eps", *present]
    title = f"### {cfg['model']} (n = {cfg['n']})"
    if report.get("evaluation", "").startswith("smoke") or cfg.get("smoke"):
        title += " — SMOKE RUN, NOT AN EVALUATION"
    budget = (
        f"{cfg.get('steps')} steps, {cfg.get('restarts')} restart(s), EOT {cfg.get('eot')}, "
        f"{cfg.get('queries')} queries; {cfg.get('select_draws')} selection / {cfg.get('score_draws')} scoring draws"
    )
    lines = [title, "", budget, ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (chain, eps), by in rows.items():
        cells = [chain, _pct(next(iter(by.values()))["clean_accuracy"]), f"{eps:g}"]
        cells += [_cell(by[t], t) if t in by else "-" for t in present]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [c for c in report["checks"] if not c["passed"]]
    lines.append("")
    if "advgan" in present:
        gans = [by["advgan"] for by in rows.values() if "advgan" in by]
        gan = next((g for g in gans if g["verdict"].get("randomized")), gans[0])  # a random chain's draws
        lines.append(
            f"advgan: AdvGAN (generator trained {cfg.get('advgan_epochs', '?')} epoch(s) on "
            f"{cfg.get('train_images', '?')} training images; with two gradient estimators, per example the "
            f"worse generator; {gan['verdict']['select']['draws']} selection / "
            f"{gan['verdict']['score']['draws']} scoring draws); not part of worst-case."
        )
    if report.get("escalations"):
        lines.append("Escalated (black-box beat white-box): " + ", ".join(report["escalations"]) + ".")
    lines.append(
        f"Checks: {len(report['checks']) - len(failed)} of {len(report['checks'])} pass"
        + "".join(f"; **FAIL `{c['name']}`**: {c['detail'][:300]}" for c in failed)
        + "."
    )
    return "\n".join(lines)


def worst_case_table(folders: list[Path], eps: float) -> str:
    """The README's compact table: per chain, clean and worst-case robust accuracy at ``eps`` for each report."""
    reports = [json.loads((f / "report.json").read_text()) for f in folders]
    chains: list[str] = []
    cells: dict[tuple[int, str], str] = {}
    for i, report in enumerate(reports):
        for r in report["results"]:
            if r["threat"] != "worst-case" or r["norm"] != "linf" or abs(r["eps"] - eps) > 1e-9:
                continue
            if r["chain"] not in chains:
                chains.append(r["chain"])
            cells[i, r["chain"]] = f"{_pct(r['clean_accuracy'])} | {_cell(r, 'worst-case')}"
    names = [str(r["config"]["model"]) for r in reports]
    head = "| chain | " + " | ".join(f"{n}: clean | worst case at eps {eps:g}" for n in names) + " |"
    rule = "|---|" + "---|---|" * len(reports)
    rows = [
        f"| {c} | " + " | ".join(cells.get((i, c), "- | -") for i in range(len(reports))) + " |"
        for c in chains
    ]
    return "\n".join([head, rule, *rows])


def main() -> None:
    """Summarise every folder given on the command line (``--worst EPS``: the README's compact table)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", nargs="*", type=Path, default=[Path("reports/mnist"), Path("reports/mnist-adv")]
    )
    parser.add_argument(
        "--worst", type=float, metavar="EPS", help="print the compact worst-case table at EPS"
    )
    args = parser.parse_args()
    missing = [str(f) for f in args.folders if not (f / "report.json").is_file()]
    if missing:
        parser.error(f"no report.json in {', '.join(missing)}")
    if args.worst is not None:
        print(worst_case_table(args.folders, args.worst))
        return
    for folder in args.folders:
        print(summarize(folder))
        print()


if __name__ == "__main__":
    main()
