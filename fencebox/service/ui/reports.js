// The /ui/reports page: open a report.json (upload or by name), checks first, charts, table, examples.
"use strict";

function $(id) { return document.getElementById(id); }

const COLUMNS = [
  { key: "chain", title: "chain" },
  { key: "threat", title: "threat" },
  { key: "norm", title: "norm" },
  { key: "eps", title: "ε", num: true },
  { key: "clean_accuracy", title: "clean", num: true, fmt: (v) => percent(v, 1) },
  { key: "robust_accuracy", title: "robust", num: true, fmt: (v) => percent(v, 1) },
  { key: "ci", title: "95% CI", sortKey: "ci_lo", num: true },
  { key: "queries_mean", title: "queries (mean)", num: true, fmt: (v) => (v === null || v === undefined ? "–" : v.toFixed(0)) },
  { key: "n", title: "n", num: true },
];
const table = { rows: [], sort: null, dir: 1 };

async function listReports() {
  try {
    const data = await api("/v1/reports");
    const sel = $("report-name");
    sel.replaceChildren(el("option", { value: "" }, "(choose)"), ...data.reports.map((n) => el("option", { value: n }, n)));
    $("report-list-status").textContent = !data.configured ? "No reports folder is configured on this server (reports_dir)."
      : data.reports.length ? `${data.reports.length} on this server` : "The reports folder is empty.";
  } catch (e) {
    $("report-list-status").textContent = "Could not list the server's reports: " + e.message;
  }
}

function openError(message) {
  $("open-error").textContent = message || "";
  $("open-error").hidden = !message;
}

async function open(event) {
  event.preventDefault();
  openError("");
  const file = $("upload").files[0];
  try {
    if (file) {
      const report = JSON.parse(await file.text());
      show(report, file.name, null);
    } else if ($("report-name").value) {
      const name = $("report-name").value;
      const report = await api("/v1/reports/" + encodeURIComponent(name));
      show(report, name, name);
    } else {
      openError("Choose a file to upload or a report on the server.");
    }
  } catch (e) {
    openError("Could not open the report: " + e.message);
  }
}

function threatLabel(r) { return r.norm && r.norm !== "linf" ? `${r.threat} (${r.norm})` : r.threat; }

function showSummary(report, title) {
  const cfg = report.config || {};
  const model = report.model || {};
  const failed = (report.checks || []).filter((c) => !c.passed).length;
  $("summary").replaceChildren(
    el("strong", {}, title), ` — model ${model.name || cfg.model || "?"}, ${cfg.n ?? "?"} examples from ${cfg.data || "?"}, `,
    `${(report.chains || []).length} chains, ${(report.results || []).length} results. `,
    failed ? el("strong", { class: "bad" }, `${failed} check${failed > 1 ? "s" : ""} failed: read them before the numbers.`) : "All checks passed.",
  );
}

// Failed checks first (the numbers below them are not to be trusted until they are understood).
function showChecks(report) {
  const checks = (report.checks || []).slice().sort((a, b) => Number(a.passed) - Number(b.passed));
  $("checks").replaceChildren(...checks.map((c) => el("li", { class: c.passed ? "check pass" : "check fail", "data-check": c.name },
    el("span", { class: "badge" }, c.passed ? "passed" : "FAILED"), el("strong", {}, c.name),
    el("div", { class: "detail" }, c.detail || ""))));
  if (!checks.length) $("checks").append(el("li", {}, "This report has no checks."));
}

function showCharts(report) {
  const results = report.results || [];
  const groups = new Map();
  for (const r of results) {
    const key = threatLabel(r);
    if (!groups.has(key)) groups.set(key, new Map());
    const byChain = groups.get(key);
    if (!byChain.has(r.chain)) byChain.set(r.chain, []);
    const q = r.queries || {};
    const ci = r.ci95 || [null, null];
    byChain.get(r.chain).push({
      x: r.eps, y: r.robust_accuracy, lo: ci[0], hi: ci[1],
      tip: `${r.chain} · ${key} · ε=${r.eps}: robust ${percent(r.robust_accuracy, 1)} (95% CI ${percent(ci[0], 1)}–${percent(ci[1], 1)}); ` +
        `queries: mean ${q.mean === undefined || q.mean === null ? "–" : q.mean.toFixed(0)}` + (q.budget ? ` of ${q.budget}` : "") + `; n=${r.n}`,
    });
  }
  const charts = [];
  // The worst case over every threat is the headline: its chart comes first.
  const ordered = [...groups].sort((a, b) => Number(b[0] === "worst-case") - Number(a[0] === "worst-case"));
  for (const [threat, byChain] of ordered) {
    const series = [...byChain].map(([name, points]) => ({ name, points }));
    charts.push(lineChart({
      title: threat, xLabel: "ε", yLabel: "robust accuracy",
      label: `Robust accuracy against epsilon under the ${threat} threat, one curve per chain: ${series.map((s) => s.name).join(", ")}`,
      series,
    }));
  }
  $("charts").replaceChildren(...charts);
}

function rowsOf(report) {
  return (report.results || []).map((r) => ({
    chain: r.chain, threat: r.threat, norm: r.norm, eps: r.eps, clean_accuracy: r.clean_accuracy,
    robust_accuracy: r.robust_accuracy, ci: r.ci95 ? `${percent(r.ci95[0], 1)}–${percent(r.ci95[1], 1)}` : "–",
    ci_lo: r.ci95 ? r.ci95[0] : null, queries_mean: r.queries ? r.queries.mean : null, n: r.n,
  }));
}

function renderTable() {
  const filter = $("table-filter").value.trim().toLowerCase();
  let rows = table.rows.filter((r) => !filter || `${r.chain} ${r.threat} ${r.norm} ${r.eps}`.toLowerCase().includes(filter));
  if (table.sort) {
    const col = COLUMNS.find((c) => c.key === table.sort);
    const k = col.sortKey || col.key;
    rows = rows.slice().sort((a, b) => {
      const x = a[k], y = b[k];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * table.dir;
    });
  }
  const head = el("tr", {}, ...COLUMNS.map((c) => {
    const sorted = table.sort === c.key;
    const b = el("button", { type: "button", "data-sort": c.key }, c.title + (sorted ? (table.dir > 0 ? " ▲" : " ▼") : ""));
    b.addEventListener("click", () => { table.dir = table.sort === c.key ? -table.dir : 1; table.sort = c.key; renderTable(); document.querySelector(`button[data-sort="${c.key}"]`).focus(); });
    return el("th", { scope: "col", "aria-sort": sorted ? (table.dir > 0 ? "ascending" : "descending") : "none" }, b);
  }));
  $("results-table").tHead.replaceChildren(head);
  $("results-table").tBodies[0].replaceChildren(...rows.map((r) => el("tr", {}, ...COLUMNS.map((c) => el("td", { class: c.num ? "num" : "" }, c.fmt ? c.fmt(r[c.key]) : r[c.key] ?? "–")))));
}

function predText(p) { return p === null || p === undefined ? "" : `predicted ${p}`; }

// Saved adversarials: {"examples": [{index, label, chain, threat, eps, clean, adversarial, purified}]}
function showExamples(data) {
  const list = data && Array.isArray(data.examples) ? data.examples : [];
  if (!list.length) {
    $("examples-status").textContent = "This report has no saved adversarial examples (run fencebox evaluate with --save-adversarials to keep them).";
    $("examples").replaceChildren();
    return;
  }
  $("examples-status").textContent = `${list.length} of ${data.total ?? list.length} saved examples.`;
  const fig = (title, part) => part ? el("figure", {}, el("img", { src: "data:image/png;base64," + part.image, alt: `${title} image` }), el("figcaption", {}, el("strong", {}, title), el("br"), predText(part.prediction))) : el("figure", {}, el("figcaption", {}, `${title}: not saved`));
  $("examples").replaceChildren(...list.map((x) => el("div", { class: "example" },
    el("h3", {}, `example ${x.index ?? "?"}` + (x.label !== null && x.label !== undefined ? `, true label ${x.label}` : "")),
    el("p", { class: "hint" }, [x.chain, x.threat, x.eps !== null && x.eps !== undefined ? `ε=${x.eps}` : null].filter(Boolean).join(" · ")),
    el("div", { class: "trio" }, fig("clean", x.clean), fig("adversarial", x.adversarial), fig("purified", x.purified)))));
}

async function show(report, title, serverName) {
  if (!report || !Array.isArray(report.results)) throw new Error("this is not a FenceBox report (no 'results' list)");
  showSummary(report, title);
  showChecks(report);
  showCharts(report);
  table.rows = rowsOf(report);
  table.sort = null;
  renderTable();
  $("report").hidden = false;
  let examples = report.examples ? { examples: report.examples } : null;
  if (!examples && serverName) {
    try { examples = await api("/v1/reports/" + encodeURIComponent(serverName) + "/examples"); } catch (e) { examples = null; }
  }
  showExamples(examples);
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey(listReports);
  $("open-form").addEventListener("submit", open);
  $("upload").addEventListener("change", () => { if ($("upload").files[0]) $("report-name").value = ""; });
  $("report-name").addEventListener("change", () => { if ($("report-name").value) $("upload").value = ""; });
  $("table-filter").addEventListener("input", renderTable);
  const wanted = new URLSearchParams(location.search).get("name");
  listReports().then(() => {
    if (wanted && [...$("report-name").options].some((o) => o.value === wanted)) { $("report-name").value = wanted; $("open").click(); }
  });
});
