"""Print the robust-accuracy summary tables of committed reports (reports/*/report.json) as Markdown.

Used to write reports/README.md and the README's summary from the numbers the CLI measured:
``.venv/bin/python scripts/summarize_reports.py reports/mnist reports/mnist-adv``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fencebox.harness.report import THREAT_ORDER as THREATS


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def summarize(folder: Path) -> str:
    """One Markdown table: a row per chain and eps, a column per threat, black-box median queries."""
    report = json.loads((folder / "report.json").read_text())
    rows: dict[tuple[str, float], dict[str, dict]] = {}
    for r in report["results"]:
        rows.setdefault((r["chain"], r["eps"]), {})[r["threat"]] = r
    head = ["chain", "clean", "eps", *THREATS]
    lines = [f"### {report['config']['model']} (n = {report['config']['n']})", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (chain, eps), by in rows.items():
        cells = [chain, _pct(next(iter(by.values()))["clean_accuracy"]), f"{eps:g}"]
        for t in THREATS:
            r = by.get(t)
            if r is None:
                cells.append("-")
                continue
            text = _pct(r["robust_accuracy"])
            q = r.get("queries") or {}
            if t.startswith("blackbox") and q.get("median_to_success") is not None:
                text += f" ({q['median_to_success']:.0f} q)"
            if t == "worst-case":
                lo, hi = r["ci95"]
                text += f" [{100 * lo:.0f}, {100 * hi:.0f}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    failed = [c for c in report["checks"] if not c["passed"]]
    lines.append("")
    lines.append(
        f"Checks: {len(report['checks']) - len(failed)} of {len(report['checks'])} pass"
        + "".join(f"; **FAIL `{c['name']}`**: {c['detail'][:300]}" for c in failed)
        + "."
    )
    return "\n".join(lines)


def main() -> None:
    """Summarise every folder given on the command line."""
    for arg in sys.argv[1:] or ["reports/mnist", "reports/mnist-adv"]:
        print(summarize(Path(arg)))
        print()


if __name__ == "__main__":
    main()
