"""The committed reports and the README agree: its summary table is the one printed from the JSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _summarize() -> object:
    spec = importlib.util.spec_from_file_location(
        "summarize_reports", ROOT / "scripts" / "summarize_reports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_worst_case_table_is_printed_from_the_committed_reports() -> None:
    table = _summarize().worst_case_table([ROOT / "reports" / "mnist", ROOT / "reports" / "mnist-adv"], 0.3)  # type: ignore[attr-defined]
    assert table in (ROOT / "README.md").read_text()


def test_reports_readme_tables_are_printed_from_the_committed_reports() -> None:
    module = _summarize()
    text = (ROOT / "reports" / "README.md").read_text()
    for folder in ("mnist", "mnist-adv"):
        assert module.summarize(ROOT / "reports" / folder) in text  # type: ignore[attr-defined]
