"""The /ui pages in a real headless Chromium (Playwright driving Debian's chromium) against a real server.

What a user relies on: a digit goes in and every stage and the label come out; a bad spec is shown
where it was typed and runs nothing; a label-only route never shows scores; the report page puts a
failed check first and draws one curve per chain whose points tell their value; every control is
labelled and reachable with Tab; nothing scrolls sideways on a laptop or a phone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fencebox.service.settings import RouteConfig, Settings
from tests.service.servers import ROOT, serve

DIGIT = ROOT / "examples" / "digit.png"
CHAINS = ("none", "jpeg-75", "median-3")
THREATS = ("oblivious", "bpda")
EPS = (0.1, 0.2, 0.3)
KEY = "browser-key"
WIDTHS = ((1280, 800), (375, 800))


def _accuracy(chain: int, threat: int, eps: float) -> float:
    return round(max(0.0, 0.95 - eps * (3 - chain) - 0.1 * threat), 3)


def demo_report() -> dict[str, Any]:
    """A small report: 3 chains x 2 threats x 3 eps, and a failed check in the middle of the list."""
    results = [
        {
            "chain": c,
            "chain_spec": c,
            "threat": t,
            "norm": "linf",
            "eps": e,
            "n": 50,
            "clean_accuracy": 0.95,
            "robust_accuracy": _accuracy(i, j, e),
            "ci95": [max(0.0, _accuracy(i, j, e) - 0.1), min(1.0, _accuracy(i, j, e) + 0.1)],
            "queries": {"kind": "gradient", "budget": None, "mean": 12.0 + i},
        }
        for i, c in enumerate(CHAINS)
        for j, t in enumerate(THREATS)
        for e in EPS
    ]
    checks = [
        {"name": "gradients-finite-nonzero", "passed": True, "detail": "finite and non-zero"},
        {"name": "large-eps-to-chance", "passed": False, "detail": "median-3 stays at 61% at eps=0.6"},
        {"name": "more-steps-never-help", "passed": True, "detail": "more steps never helped"},
    ]
    return {
        "schema": "fencebox.harness.report/1",
        "config": {"model": "builtin:mnist", "data": "builtin:mnist-test", "n": 50},
        "chains": [{"name": c, "spec": c} for c in CHAINS],
        "checks": checks,
        "all_checks_passed": False,
        "results": results,
    }


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reports")
    (d / "demo.json").write_text(json.dumps(demo_report()))
    (d / "with-examples").mkdir()
    (d / "with-examples" / "report.json").write_text(json.dumps(demo_report()))
    clean = np.zeros((2, 28, 28, 1), np.uint8)
    clean[:, 8:20, 12:16] = 255
    np.savez(
        d / "with-examples" / "adversarials.npz",
        clean=clean,
        adversarial=clean ^ 24,
        purified=clean ^ 8,
        label=np.array([1, 1]),
        pred_clean=np.array([1, 1]),
        pred_adversarial=np.array([7, 4]),
        pred_purified=np.array([1, 4]),
    )
    real = ROOT / "reports" / "mnist" / "report.json"
    if real.is_file():
        (d / "mnist").mkdir()
        shutil.copy(real, d / "mnist" / "report.json")
    return d


def _settings(reports_dir: Path, **top: Any) -> Settings:
    return Settings(
        routes=[
            RouteConfig(name="mnist", allow_chain_override=True),
            RouteConfig(name="scores", policy="scores"),
        ],
        threads=2,
        reports_dir=reports_dir,
        **top,
    )


@pytest.fixture(scope="module")
def server(reports_dir: Path, browser_context: Any) -> Iterator[str]:
    with serve(_settings(reports_dir)) as s:
        yield s.url


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    p = browser_context.new_page()
    p.set_viewport_size({"width": 1280, "height": 800})
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield p
    finally:
        p.close()
    assert not errors, errors  # no script error, failed load or CSP violation on any page


def _run_digit(page: Any, server: str, route: str = "mnist") -> dict[str, Any]:
    page.goto(server + "/")
    page.wait_for_selector("#route option", state="attached")
    page.select_option("#route", route)
    page.set_input_files("#file", str(DIGIT))
    seen: list[dict[str, Any]] = []

    def keep(route: Any) -> None:  # read the answer on its way to the page (what the page was sent)
        answer = route.fetch()
        seen.append(answer.json())
        route.fulfill(response=answer)

    page.route("**/v1/purify?*", keep)
    page.click("#run")
    page.wait_for_selector("#answer-label")
    page.unroute("**/v1/purify?*")
    assert len(seen) == 1
    return seen[0]


def test_a_digit_shows_four_stages_and_a_label(page: Any, server: str, screenshots: Path) -> None:
    body = _run_digit(page, server)
    assert page.url.endswith("/ui")  # / redirects to the playground
    assert page.locator("#stages figure.stage img").count() == 4  # fencebox-default has four stages
    names = page.locator("#stages figure.stage figcaption strong").all_inner_texts()
    assert names == [f"{i + 1}. {s['name']}" for i, s in enumerate(body["stages"])]
    assert page.inner_text("#answer-label") == str(body["answer"]["label"])
    assert page.get_attribute("#download", "href").startswith("data:image/png;base64,")
    page.screenshot(path=str(screenshots / "ui-playground.png"), full_page=True)


_DROP = """async () => {
  const blob = await (await fetch('/ui/samples/digit.png')).blob();
  const dt = new DataTransfer();
  dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
  document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""


def test_a_dropped_image_and_a_bundled_sample_run_too(page: Any, server: str) -> None:
    page.goto(server + "/ui")
    page.wait_for_selector("#route option", state="attached")
    page.evaluate(_DROP)
    assert "dropped.png" in page.inner_text("#drop")
    page.click("#run")
    page.wait_for_selector("#answer-label")
    assert page.locator("#stages figure.stage").count() == 4
    before = page.get_attribute("#stages figure img", "src")
    page.select_option("#sample", "photo.jpg")  # a colour photo, fitted to the route's 28x28 gray input
    page.click("#run")
    page.wait_for_function("(old) => document.querySelector('#stages figure img').src !== old", arg=before)
    assert page.get_attribute("#stages figure img", "width") == "28"
    assert "28×28" in page.inner_text("#stages figure figcaption")


def test_a_bad_spec_shows_its_error_and_runs_nothing(page: Any, server: str) -> None:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url))
    page.goto(server + "/ui")
    page.wait_for_selector("#route option", state="attached")
    page.set_input_files("#file", str(DIGIT))
    page.select_option("#preset", "__custom__")
    page.fill("#spec", "jpeg(quality=75 | bit_depth(bits=5)")
    page.wait_for_selector("#spec-error:not([hidden])")
    assert "position 16" in page.inner_text("#spec-error")
    assert page.get_attribute("#spec", "aria-invalid") == "true"
    page.click("#run")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'spec'")
    assert not [u for u in sent if "/v1/purify" in u]
    assert page.is_hidden("#results")
    page.fill("#spec", "median(size=3)")  # fixed: the error goes away and the run goes ahead
    page.wait_for_selector("#spec-error", state="hidden")
    page.click("#run")
    page.wait_for_selector("#answer-label")
    assert page.locator("#stages figure.stage").count() == 1


def test_a_label_route_never_shows_scores(page: Any, server: str) -> None:
    body = _run_digit(page, server, "mnist")
    assert set(body["answer"]) == {"label", "class_name"}
    assert page.locator("#answer-scores, #answer-topk").count() == 0
    assert "probability" not in page.inner_text("#results")
    assert page.is_hidden("#chain-box") is False  # this route allows overrides; "scores" does not
    scored = _run_digit(page, server, "scores")  # the same page does show scores where the policy allows
    assert "scores" in scored["answer"]
    assert page.locator("#answer-scores tbody tr").count() == 10
    assert page.is_hidden("#chain-box") and page.is_hidden("#seed")


def _open_report(page: Any, server: str, name: str) -> None:
    page.goto(server + "/ui/reports")
    page.wait_for_selector(f'#report-name option[value="{name}"]', state="attached")
    page.select_option("#report-name", name)
    page.click("#open")
    page.wait_for_selector("#report:not([hidden])")


def test_the_report_lists_a_failed_check_first_and_draws_a_curve_per_chain(page: Any, server: str) -> None:
    _open_report(page, server, "demo.json")
    first = page.locator("#checks li").first
    assert first.get_attribute("data-check") == "large-eps-to-chance"
    assert "fail" in first.get_attribute("class") and "median-3 stays at 61%" in first.inner_text()
    charts = page.locator("#charts figure.chart")
    assert charts.count() == len(THREATS)
    for i in range(len(THREATS)):
        series = charts.nth(i).locator("g.series")
        assert series.count() == len(CHAINS)
        assert sorted(series.evaluate_all("gs => gs.map(g => g.dataset.series)")) == sorted(CHAINS)
        assert charts.nth(i).locator("circle.point").count() == len(CHAINS) * len(EPS)
    point = page.locator('g.series[data-series="median-3"] circle.point').nth(1)  # bpda chart second
    tip = point.get_attribute("data-tip")
    assert "ε=0.2" in tip
    point.hover()
    page.wait_for_selector("#tooltip:not([hidden])")
    shown = page.inner_text("#tooltip")
    value = _accuracy(2, THREATS.index(shown.split(" · ")[1]), 0.2)
    assert f"robust {100 * value:.1f}%" in shown and "95% CI" in shown and "queries: mean 14" in shown


def test_the_table_sorts(page: Any, server: str) -> None:
    _open_report(page, server, "demo.json")
    page.click('button[data-sort="robust_accuracy"]')
    col = page.locator("#results-table tbody tr td:nth-child(6)").all_inner_texts()
    values = [float(v.rstrip("%")) for v in col]
    assert values == sorted(values) and len(values) == len(CHAINS) * len(THREATS) * len(EPS)
    page.click('button[data-sort="robust_accuracy"]')
    col = page.locator("#results-table tbody tr td:nth-child(6)").all_inner_texts()
    assert [float(v.rstrip("%")) for v in col] == sorted(values, reverse=True)


def test_an_uploaded_report_opens_without_the_server(page: Any, server: str, reports_dir: Path) -> None:
    page.goto(server + "/ui/reports")
    page.set_input_files("#upload", str(reports_dir / "demo.json"))
    page.click("#open")
    page.wait_for_selector("#report:not([hidden])")
    assert page.locator("#checks li").first.get_attribute("data-check") == "large-eps-to-chance"
    assert "no saved adversarial examples" in page.inner_text("#examples-status")


def test_saved_adversarials_show_clean_adversarial_and_purified(page: Any, server: str) -> None:
    _open_report(page, server, "with-examples")
    page.wait_for_selector("#examples .example")
    assert page.locator("#examples .example").count() == 2
    first = page.locator("#examples .example").first
    assert first.locator("img").count() == 3
    assert "predicted 7" in first.inner_text() and "true label 1" in first.inner_text()


def test_the_real_report_renders(page: Any, server: str, reports_dir: Path, screenshots: Path) -> None:
    if not (reports_dir / "mnist").is_dir():
        pytest.skip("reports/mnist/report.json is not in this checkout")
    page.set_viewport_size({"width": 1280, "height": 1500})
    _open_report(page, server, "mnist")
    report = json.loads((reports_dir / "mnist" / "report.json").read_text())
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if failed:
        assert page.locator("#checks li").first.get_attribute("data-check") in failed
    assert page.locator("#charts figure.chart").first.locator("g.series").count() == len(report["chains"])
    page.locator("#charts figure.chart").first.locator("circle.point").first.hover()
    page.wait_for_selector("#tooltip:not([hidden])")
    page.screenshot(path=str(screenshots / "ui-reports.png"), full_page=False)


_CONTROLS = """() => {
  const sel = 'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])';
  const shown = [...document.querySelectorAll(sel)].filter((e) => !e.disabled && e.getClientRects().length > 0
      && getComputedStyle(e).visibility !== 'hidden');
  shown.forEach((e, i) => e.setAttribute('data-tab', String(i)));
  const named = (e) => (e.labels && e.labels.length) || e.getAttribute('aria-label') || (e.textContent || '').trim();
  return {count: shown.length, unnamed: shown.filter((e) => !named(e)).map((e) => e.outerHTML.slice(0, 80))};
}"""


def _tab_through(page: Any) -> None:
    controls = page.evaluate(_CONTROLS)
    assert controls["count"] > 5 and not controls["unnamed"], controls
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.click(1, 1)
    reached = set()
    for _ in range(controls["count"] * 2 + 5):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate("document.activeElement && document.activeElement.getAttribute('data-tab')")
        )
    missing = set(map(str, range(controls["count"]))) - reached
    left = page.evaluate(
        "(ids) => ids.map((i) => document.querySelector(`[data-tab='${i}']`).outerHTML.slice(0, 80))",
        sorted(missing),
    )
    assert not missing, left


def test_tab_reaches_every_control_on_both_pages(page: Any, server: str) -> None:
    _run_digit(page, server)
    page.select_option("#preset", "__custom__")  # the spec field is a control too
    _tab_through(page)
    _open_report(page, server, "with-examples")
    page.wait_for_selector("#examples .example")
    _tab_through(page)


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_no_horizontal_scroll(page: Any, server: str, width: int, height: int) -> None:
    page.set_viewport_size({"width": width, "height": height})
    _run_digit(page, server)
    page.select_option("#preset", "__custom__")
    page.fill(
        "#spec",
        "jpeg(quality=75 | bit_depth(bits=5) | median(size=3) | resize_pad(min_scale=0.9, max_scale=1.0)",
    )
    page.wait_for_selector("#spec-error:not([hidden])")
    sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert sizes[0] <= sizes[1], ("playground", sizes)
    _open_report(page, server, "mnist" if Path(ROOT / "reports" / "mnist").is_dir() else "demo.json")
    sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert sizes[0] <= sizes[1], ("reports", sizes)


def test_the_pages_ask_for_a_key_when_keys_are_configured(reports_dir: Path, browser_context: Any) -> None:
    with serve(_settings(reports_dir, api_keys=[KEY])) as s:
        page = browser_context.new_page()
        try:
            page.goto(s.url + "/ui")
            page.wait_for_selector("#key-message:not([hidden])")
            assert "API key" in page.inner_text("#key-message")
            assert page.evaluate("document.activeElement.id") == "api-key"
            assert page.locator("#route option").count() == 0
            page.fill("#api-key", KEY)
            page.press("#api-key", "Enter")
            page.wait_for_selector("#route option", state="attached")
            page.set_input_files("#file", str(DIGIT))
            page.click("#run")
            page.wait_for_selector("#answer-label")
            assert page.is_hidden("#key-message")
            page.goto(s.url + "/ui/reports")  # the key is remembered for this tab
            page.wait_for_selector('#report-name option[value="demo.json"]', state="attached")
        finally:
            page.close()
