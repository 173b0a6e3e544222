"""Write an evaluation's report: report.json (machines), report.md (tables), report.html (plots).

The HTML page is self-contained: matplotlib figures are embedded as base64 PNG.  Failed checks are
shown first, loudly, in both human-readable reports (before the plots in the HTML page).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

THREAT_ORDER = (
    "oblivious",
    "transfer",
    "bpda",
    "eot",
    "bpda-eot",
    "blackbox-scores",
    "blackbox-label",
    "escalation",
    "worst-case",
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _robust(r: dict[str, Any]) -> str:
    """Robust accuracy (mean over scoring draws), with the strict all-draws figure where it differs."""
    text = _pct(r["robust_accuracy"])
    strict = r.get("strict_accuracy")
    if strict is not None and strict != r["robust_accuracy"]:
        text += f" (all draws {_pct(strict)})"
    return text


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def _q(q: dict[str, Any]) -> str:
    if q.get("kind") == "none":
        return "-"
    med = q.get("median_to_success")
    text = f"{q['kind']}: mean {q['mean']:.0f}"
    if med is not None:
        text += f", median to success {med:.0f}"
    if q.get("budget"):
        text += f" (budget {q['budget']})"
    return text


def _sorted_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    order = {t: i for i, t in enumerate(THREAT_ORDER)}
    chains = {c["name"]: i for i, c in enumerate(doc["chains"])}
    return sorted(
        doc["results"],
        key=lambda r: (chains.get(r["chain"], 99), r["norm"], r["eps"], order.get(r["threat"], 50)),
    )


def check_lines(doc: dict[str, Any]) -> list[str]:
    """Markdown lines for the checks, failures first and marked loudly."""
    checks = sorted(doc["checks"], key=lambda c: c["passed"])
    lines = []
    failed = [c for c in checks if not c["passed"]]
    if failed:
        lines.append(
            f"> **WARNING: {len(failed)} SANITY CHECK(S) FAILED. Do not trust these numbers as they are.**"
        )
        lines.append("")
    lines += ["| check | result | detail |", "|---|---|---|"]
    for c in checks:
        mark = "PASS" if c["passed"] else "**FAIL**"
        lines.append(f"| {c['name']} | {mark} | {c['detail'].replace('|', '/')} |")
    return lines


def to_markdown(doc: dict[str, Any]) -> str:
    """The Markdown report: configuration, checks, headline table, per-chain details, full table."""
    cfg = doc["config"]
    smoke = [
        "> **SMOKE RUN (--fast): small budgets, NOT an evaluation. Do not quote these numbers.**",
        "",
    ]
    lines = [
        f"# FenceBox robustness report: {cfg.get('model')}",
        "",
        *(smoke if cfg.get("smoke") else []),
        f"Data `{cfg.get('data')}`, first n = {cfg.get('n')} examples; attacks {', '.join(cfg.get('attacks', []))}; "
        f"{cfg.get('steps')} steps, {cfg.get('restarts')} restart(s), EOT {cfg.get('eot')} draws for random chains; "
        f"black-box budget {cfg.get('queries')} queries per image through {cfg.get('oracle')}; seed {cfg.get('seed')}.",
        f"L-inf eps is floor(255 eps) grey levels ({cfg.get('eps_levels')}). Per example, the candidates of every "
        f"attack and threat are ranked on {cfg.get('select_draws')} selection draws; the worst is scored on "
        f"{cfg.get('score_draws')} fresh, independent draws (one draw for a deterministic chain). Robust accuracy = "
        "mean fraction of scoring draws correct; 'all draws' = correct on every scoring draw; 95% Wilson intervals "
        "in brackets.",
        "",
        "## Checks",
        "",
        *check_lines(doc),
        *(
            [
                "",
                "Escalated (black-box beat white-box; re-attacked from its adversarials): "
                + ", ".join(doc["escalations"]),
            ]
            if doc.get("escalations")
            else []
        ),
        "",
        "## Chains",
        "",
        "| chain | spec | random | surrogate | clean accuracy | latency (ms/image) |",
        "|---|---|---|---|---|---|",
    ]
    for c in doc["chains"]:
        lines.append(
            f"| {c['name']} | `{c['spec'] or 'none'}` | {c['randomized']} | {c['surrogate_kind']} | "
            f"{_pct(c['clean_accuracy'])} {_ci(c['clean_ci95'])} | {c['latency_ms_per_image']:.4f} |"
        )
    rows = _sorted_rows(doc)
    threats = [t for t in THREAT_ORDER if any(r["threat"] == t for r in rows)]
    keys = sorted({(r["norm"], r["eps"]) for r in rows})
    for norm, eps in keys:
        lines += ["", f"## Robust accuracy, {norm} eps = {eps}", ""]
        lines.append("| chain | clean | " + " | ".join(threats) + " |")
        lines.append("|---|---|" + "---|" * len(threats))
        by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in rows:
            if r["norm"] == norm and r["eps"] == eps:
                by[r["chain"]][r["threat"]] = r
        for chain, cells in by.items():
            first = next(iter(cells.values()))
            vals = [_robust(cells[t]) if t in cells else "-" for t in threats]
            lines.append(f"| {chain} | {_pct(first['clean_accuracy'])} | " + " | ".join(vals) + " |")
    lines += [
        "",
        "## All results",
        "",
        "| chain | threat | norm | eps | n | clean | robust | all draws | 95% CI | broken by attack | queries | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        broke = ", ".join(f"{a['name']} {a['broke']}/{a['attacked']}" for a in r["attacks"]) or "-"
        lines.append(
            f"| {r['chain']} | {r['threat']} | {r['norm']} | {r['eps']} | {r['n']} | {_pct(r['clean_accuracy'])} | "
            f"{_pct(r['robust_accuracy'])} | {_pct(r.get('strict_accuracy'))} | {_ci(r['ci95'])} | {broke} | "
            f"{_q(r['queries'])} | {r['seconds']:.1f} |"
        )
    for extra in (
        patch_markdown(doc.get("patch_results", [])),
        advgan_markdown(doc.get("advgan_results", []), doc["config"]),
    ):
        if extra:
            lines += ["", *extra.splitlines()]
    env = doc["environment"]
    lines += ["", "## Environment", "", "```", json.dumps(env, indent=2), "```", ""]
    return "\n".join(lines)


def patch_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown table of patch rows (``patch_results``): success, robust accuracy, share, steps."""
    if not rows:
        return ""
    lines = [
        "## Patch threats (no ε; not part of the L∞ worst case)",
        "",
        "Success = mean fraction of scoring draws wrong over the attacked examples; robust = mean fraction "
        "correct over the targeted examples (all draws: correct on every scoring draw).",
        "",
        "| chain | threat | size | share | gradient | EOT | attacked | success | 95% CI | robust | mean steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = "-" if r["size"] is None else f"{100 * r['size']:g}%"
        lines.append(
            f"| {r['chain']} | {r['threat']} | {size} | {100 * r['share']:.1f}% | {r['gradient']} | {r['eot']} | "
            f"{r['attacked']} | {_pct(r['success_rate'])} | {_ci(r['ci95'])} | {_robust(r)} | {r['mean_steps']:.1f} |"
        )
    return "\n".join(lines)


def advgan_markdown(rows: list[dict[str, Any]], config: dict[str, Any] | None = None) -> str:
    """Markdown table of AdvGAN rows (``advgan_results``) next to PGD: success, robust accuracy, speed.

    ``config`` (the report's) says how the generators were trained and, for rows merged in from a
    separate run (``config.merged``), where they came from.
    """
    if not rows:
        return ""
    config = config or {}
    lines = ["## AdvGAN next to PGD (not part of the L∞ worst case)", ""]
    if "advgan_epochs" in config:
        lines += [
            f"One generator per chain, ε and gradient estimator, trained {config['advgan_epochs']} epoch(s) on "
            f"{config.get('train_images', '?')} training images.  The PGD columns are a short PGD run "
            "beside it for speed and success on the same terms; the L∞ tables hold the full attack.",
            "",
        ]
    for m in config.get("merged", []):
        if m.get("rows") == "advgan_results":
            note = f": {m['note']}" if m.get("note") else ""
            lines += [
                f"These rows were measured by a separate run on the same examples, chains, ε and verdict "
                f"draws, merged into this report with scripts/merge_report_rows.py{note}.",
                "",
            ]
    steps = sorted({r["pgd_steps"] for r in rows if r.get("pgd_steps")})
    pgd = f"PGD-{steps[0]}" if len(steps) == 1 else "PGD"
    lines += [
        "| chain | eps (levels) | gradient | EOT | attacked | AdvGAN success | 95% CI | robust | AdvGAN img/s "
        f"| {pgd} success | {pgd} robust | {pgd} img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = "-" if r.get("pgd_images_per_s") is None else f"{r['pgd_images_per_s']:.0f}"
        lines.append(
            f"| {r['chain']} | {r['eps']:g} ({r['levels']}) | {r['gradient']} | {r['eot']} | {r['attacked']} | "
            f"{_pct(r['success_rate'])} | {_ci(r['ci95'])} | {_robust(r)} | {r['images_per_s']:.0f} | "
            f"{_pct(r.get('pgd_success_rate'))} | {_pct(r.get('pgd_robust_accuracy'))} | {speed} |"
        )
    return "\n".join(lines)


# ----- plots ----------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _clean_vs_robust(plt: Any, chains: list[str], worst: list[dict[str, Any]]) -> str:
    """Scatter of each chain's clean against its worst-case robust accuracy at the largest ε."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    # Chains often share a point (e.g. 0% robust): a legend instead of labels beside the points, and
    # shrinking distinct markers, keep every chain readable where the labels used to overlap.
    markers = "osD^vPX*<>"
    for i, chain in enumerate(chains):
        mine = [r for r in worst if r["chain"] == chain]
        if mine:
            top = max(mine, key=lambda r: (r["norm"] == "linf", r["eps"]))
            size = 30 + 90 * (len(chains) - 1 - i) / max(1, len(chains) - 1)
            ax.scatter(
                top["clean_accuracy"],
                top["robust_accuracy"],
                s=size,
                marker=markers[i % len(markers)],
                facecolors="none",
                edgecolors=f"C{i % 10}",
                linewidths=1.5,
                label=chain[:60],
            )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("worst-case robust accuracy (largest eps)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Clean vs robust accuracy")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, fontsize=8, frameon=False)
    return _png(fig)


def plots(doc: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs: robust accuracy vs ε per chain and threat, clean vs robust, latency, black-box queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _sorted_rows(doc)
    chains = [c["name"] for c in doc["chains"]]
    out: dict[str, str] = {}
    for norm in sorted({r["norm"] for r in rows}):
        threats = [t for t in THREAT_ORDER if any(r["threat"] == t and r["norm"] == norm for r in rows)]
        cols = min(4, len(threats))
        nrows = (len(threats) + cols - 1) // cols
        fig, axes = plt.subplots(
            nrows,
            cols,
            figsize=(4 * cols, 3.4 * nrows + 0.8),
            squeeze=False,
            sharey=True,
            constrained_layout=True,
        )
        for ax, threat in zip(axes.ravel(), threats, strict=False):
            for chain in chains:
                pts = sorted(
                    (r["eps"], r["robust_accuracy"], r["clean_accuracy"])
                    for r in rows
                    if r["chain"] == chain and r["threat"] == threat and r["norm"] == norm
                )
                if pts:
                    xs = [0.0] + [p[0] for p in pts]
                    ys = [pts[0][2]] + [p[1] for p in pts]
                    ax.plot(xs, ys, marker="o", label=chain)
            ax.set_title(threat)
            ax.set_xlabel(f"eps ({norm})")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(threats) :]:
            ax.axis("off")
        for row_axes in axes:
            row_axes[0].set_ylabel("robust accuracy")
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(
            handles, [n[:60] for n in names], loc="outside lower center", ncols=min(3, len(names)), fontsize=8
        )
        fig.suptitle(f"Robust accuracy vs eps ({norm}); eps = 0 is clean accuracy")
        out[f"robust_vs_eps_{norm}"] = _png(fig)

    worst = [r for r in rows if r["threat"] == "worst-case"] or rows
    if worst:  # a run of patch or AdvGAN rows only has no L-inf/L2 point to plot
        out["clean_vs_robust"] = _clean_vs_robust(plt, chains, worst)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(chains, [c["latency_ms_per_image"] for c in doc["chains"]])
    ax.set_xlabel("chain latency (ms per image, exact apply, one thread)")
    ax.set_title("Latency per chain")
    out["latency"] = _png(fig)

    bb = [
        r
        for r in rows
        if r["threat"].startswith("blackbox") and r["queries"].get("median_to_success") is not None
    ]
    if bb:
        fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.22 * len(bb)), constrained_layout=True)
        labels = [f"{r['chain'][:40]} eps={r['eps']} {r['threat'].split('-')[1]}" for r in bb]
        colours = ["tab:orange" if r["threat"].endswith("label") else "tab:blue" for r in bb]
        ax.barh(labels, [r["queries"]["median_to_success"] for r in bb], color=colours)
        ax.set_xscale("log")
        ax.set_xlabel("median queries to success (log)")
        ax.set_title("Black-box cost: scores (blue) vs label only (orange)")
        ax.tick_params(axis="y", labelsize=6)
        out["blackbox_queries"] = _png(fig)
    return out


def _md_table_to_html(lines: list[str]) -> str:
    rows = [ln.strip("|").split(" | ") for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = ""
    for r in rows[1:]:
        cells = []
        for c in r:
            c = c.strip()
            cls = ' class="fail"' if "FAIL" in c else ""
            cells.append(f"<td{cls}>{html.escape(c.replace('**', '').replace('`', ''))}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML page: checks, plots (embedded PNG) and the full Markdown tables."""
    md = to_markdown(doc)
    sections: list[str] = []
    block: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            sections.append(_md_table_to_html(block))
            block = []
        if line.startswith("# "):
            sections.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            sections.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("> "):
            sections.append(f'<p class="banner">{html.escape(line[2:].replace("**", ""))}</p>')
        elif line.strip() and not line.startswith("```"):
            sections.append(f"<p>{html.escape(line)}</p>")
    if block:
        sections.append(_md_table_to_html(block))
    figs = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{v}"><figcaption>{k}</figcaption></figure>'
        for k, v in plots(doc).items()
    )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".fail{background:#fdd;font-weight:bold}.banner{background:#c00;color:#fff;padding:1em;font-weight:bold}"
        "img{max-width:100%}"
    )
    # The checks come first (a failed check says how far to trust everything below), then the plots.
    after_checks = next(
        (i for i, x in enumerate(sections) if x.startswith("<h2>") and i > 1 and "Checks" not in x),
        len(sections),
    )
    body = "".join(sections[:after_checks]) + "<h2>Plots</h2>" + figs + "".join(sections[after_checks:])
    return f"<!doctype html><html><head><meta charset='utf-8'><title>FenceBox report</title><style>{style}</style></head><body>{body}</body></html>"


def write_report(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(doc, indent=1))
    paths["md"].write_text(to_markdown(doc))
    paths["html"].write_text(to_html(doc))
    return paths
