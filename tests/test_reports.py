"""The committed reports and the README agree: its summary table is the one printed from the JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summarize() -> Any:
    return _script("summarize_reports")


def test_readme_worst_case_table_is_printed_from_the_committed_reports() -> None:
    table = _summarize().worst_case_table([ROOT / "reports" / "mnist", ROOT / "reports" / "mnist-adv"], 0.3)  # type: ignore[attr-defined]
    assert table in (ROOT / "README.md").read_text()


def test_reports_readme_tables_are_printed_from_the_committed_reports() -> None:
    module = _summarize()
    text = (ROOT / "reports" / "README.md").read_text()
    for folder in ("mnist", "mnist-adv"):
        assert module.summarize(ROOT / "reports" / folder) in text  # type: ignore[attr-defined]


def test_threat_tables_in_both_readmes_are_printed_from_the_committed_reports() -> None:
    threats = _script("threat_reports")
    faces = threats.summary_faces(ROOT / "reports" / "faces")
    advgan = threats.summary_advgan(ROOT / "reports" / "mnist-advgan")
    readme, reports_readme = (ROOT / "README.md").read_text(), (ROOT / "reports" / "README.md").read_text()
    for table in (faces, advgan):
        assert table.replace("### ", "#### ", 1) in readme  # the README nests them one level deeper
        assert table in reports_readme
    assert (ROOT / "reports" / "faces" / "report.md").read_text() == faces + "\n"
    assert (ROOT / "reports" / "mnist-advgan" / "report.md").read_text() == advgan + "\n"


def _patch_row(chain: str, gradient: str, success: float, shape: str = "square") -> dict[str, Any]:
    return {
        "chain": chain,
        "shape": shape,
        "size": 0.1 if shape == "square" else None,
        "share": 0.1,
        "gradient": gradient,
        "n": 25,
        "clean_accuracy": 1.0,
        "success_rate": success,
        "ci95": [success / 2, (1 + success) / 2],
    }


def _faces_report(folder: Path, results: list[dict[str, Any]]) -> Path:
    config = {"model": "builtin:faces", "n": 50, "patch_steps": 3, "glasses_steps": 2, "step_size": 0.05}
    config |= {"batch": 32, "eot": 4, "placement": "anywhere"}
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"config": config, "results": results}))
    return folder


def test_faces_summary_shows_the_per_example_worst_row_not_the_more_successful_estimator(
    tmp_path: Path,
) -> None:
    rows = [_patch_row("none", "bpda", 0.08), _patch_row("none", "bpda", 0.04, "glasses")]
    for shape in ("square", "glasses"):
        rows += [
            _patch_row("median", "bpda", 0.6, shape),
            _patch_row("median", "surrogate", 0.2, shape),
            _patch_row("median", "worst of bpda+surrogate", 0.44, shape),
        ]
    table = _script("threat_reports").summary_faces(_faces_report(tmp_path / "r", rows))
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert lines["| none"] == "| none | 100% | 8% [4, 54] (10.0%) | 4% [2, 52] (10.0%) |"
    assert lines["| median"] == "| median | 100% | 44% [22, 72] (10.0%) | 44% [22, 72] (10.0%) |"


def test_faces_summary_refuses_a_report_without_worst_rows(tmp_path: Path) -> None:
    rows = [_patch_row("median", "bpda", 0.6), _patch_row("median", "surrogate", 0.2)]
    rows += [_patch_row("median", "bpda", 0.1, "glasses")]
    with pytest.raises(SystemExit, match="no single 'worst of' row"):
        _script("threat_reports").summary_faces(_faces_report(tmp_path / "r", rows))


def _linf_row(chain: str, threat: str, robust: float) -> dict[str, Any]:
    return {"chain": chain, "eps": 0.3, "threat": threat, "clean_accuracy": 0.98, "robust_accuracy": robust}


def _gan_row(chain: str, gradient: str, robust: float) -> dict[str, Any]:
    verdict = {"select": {"seed": 1, "draws": 5}, "score": {"seed": 2, "draws": 20}}
    return {"chain": chain, "eps": 0.3, "gradient": gradient, "robust_accuracy": robust, "verdict": verdict}


def test_summary_prints_an_advgan_column_from_a_report_with_advgan_rows(tmp_path: Path) -> None:
    report = {
        "config": {"model": "builtin:mnist", "n": 50, "advgan_epochs": 2, "train_images": 1000},
        "checks": [],
        "results": [_linf_row("none", "bpda", 0.0), _linf_row("jpeg", "bpda", 0.1)],
        "advgan_results": [
            _gan_row("none", "bpda", 0.46),
            _gan_row("jpeg", "bpda", 0.9),
            _gan_row("jpeg", "surrogate", 0.1),
            _gan_row("jpeg", "worst of bpda+surrogate", 0.52),
        ],
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    table = _summarize().summarize(tmp_path)
    assert "| chain | clean | eps | bpda | advgan |" in table
    assert "| none | 98% | 0.3 | 0% | 46% |" in table and "| jpeg | 98% | 0.3 | 10% | 52% |" in table
    assert "2 epoch(s) on 1000 training images" in table and "not part of worst-case" in table
    del report["advgan_results"]
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert "advgan" not in _summarize().summarize(tmp_path)


def test_advgan_cost_table_is_printed_from_the_committed_measurements() -> None:
    spec = importlib.util.spec_from_file_location("bench_advgan", ROOT / "benchmarks" / "bench_advgan.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = sorted((ROOT / "reports" / "mnist-advgan" / "cost").glob("*.json"))
    assert runs and bench.markdown(runs) in (ROOT / "reports" / "README.md").read_text()


@pytest.mark.parametrize("folder", ["mnist", "mnist-adv"])
def test_the_merged_advgan_column_never_beats_the_worst_case(folder: str) -> None:
    """reports/README.md says AdvGAN leaves at least the worst case's robust accuracy in every row, and
    that the column came from a run merged by scripts/merge_report_rows.py: both hold in the JSON."""
    report = json.loads((ROOT / "reports" / folder / "report.json").read_text())
    assert [m["rows"] for m in report["config"]["merged"]] == ["advgan_results"]
    worst = {(r["chain"], r["eps"]): r for r in report["results"] if r["threat"] == "worst-case"}
    cells = _summarize().advgan_cells(report["advgan_results"])
    assert set(cells) == set(worst)
    for key, gan in cells.items():
        assert gan["robust_accuracy"] >= worst[key]["robust_accuracy"], key
