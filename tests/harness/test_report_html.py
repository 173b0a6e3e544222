"""report.html reads in the order the README promises: the checks (failures first) before any plot."""

from __future__ import annotations

import re
from typing import Any

from fencebox.harness.report import to_html

CHAINS = ("none", "jpeg", "median", "bits")


def _doc(failed: str) -> dict[str, Any]:
    checks = [
        {"name": n, "passed": n != failed, "detail": f"detail of {n}"}
        for n in ("gradients-finite-nonzero", "large-eps-to-chance", "more-steps-never-help")
    ]
    results = [
        {
            "chain": c,
            "threat": t,
            "norm": "linf",
            "eps": e,
            "n": 20,
            "clean_accuracy": 0.9,
            "robust_accuracy": 0.0
            if t == "worst-case"
            else 0.5,  # every chain at one point: labels would collide
            "ci95": [0.0, 0.2],
            "attacks": [],
            "queries": {"kind": "gradient", "mean": 10.0},
            "seconds": 1.0,
        }
        for c in CHAINS
        for t in ("oblivious", "worst-case")
        for e in (0.1, 0.3)
    ]
    return {
        "config": {"model": "toy", "data": "toy", "n": 20, "attacks": ["fgsm"]},
        "environment": {"python": "3.11"},
        "chains": [
            {
                "name": c,
                "spec": c,
                "randomized": False,
                "surrogate_kind": "exact",
                "clean_accuracy": 0.9,
                "clean_ci95": [0.8, 0.95],
                "latency_ms_per_image": 0.1,
            }
            for c in CHAINS
        ],
        "checks": checks,
        "results": results,
    }


def test_checks_come_before_the_plots_with_the_failure_first() -> None:
    page = to_html(_doc(failed="more-steps-never-help"))
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings.index("Checks") < headings.index("Plots")
    assert page.index("SANITY CHECK(S) FAILED") < page.index("<figure>")
    rows = re.findall(r"<tr><td>([^<]*)</td><td( class=\"fail\")?>", page)
    assert rows[0] == ("more-steps-never-help", ' class="fail"')


def test_every_plot_is_embedded() -> None:
    page = to_html(_doc(failed=""))
    for name in ("robust_vs_eps_linf", "clean_vs_robust", "latency"):
        assert f'alt="{name}" src="data:image/png;base64,' in page
