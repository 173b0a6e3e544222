// Hand-written SVG line charts for the report page: hover (or focus + arrow keys) shows each point's value.
"use strict";

// Okabe-Ito colours (distinguishable with common colour-vision deficiencies); black last.
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7a7a2a"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3"];
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showTooltip(text, x, y) {
  const tip = document.getElementById("tooltip");
  tip.textContent = text;
  tip.hidden = false;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  const left = Math.max(4, Math.min(x + 12, window.innerWidth - w - 4));
  const top = y + 14 + h > window.innerHeight ? y - h - 10 : y + 14;
  tip.style.left = left + "px";
  tip.style.top = Math.max(4, top) + "px";
}

function hideTooltip() { document.getElementById("tooltip").hidden = true; }

// A chart of y in [0, 1] against x: series = [{name, points: [{x, y, lo, hi, tip}]}].
function lineChart(opts) {
  const W = 360, H = 240, L = 46, R = 12, T = 12, B = 40;
  const xs = [...new Set(opts.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const x0 = xs[0], x1 = xs[xs.length - 1];
  const span = x1 - x0 || 1;
  const px = (x) => (xs.length === 1 ? L + (W - L - R) / 2 : L + 14 + ((x - x0) / span) * (W - L - R - 28));
  const py = (y) => T + (1 - y) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: 0, "aria-label": opts.label });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: py(t), y2: py(t) }));
    root.append(svg("text", { x: L - 6, y: py(t) + 4, "text-anchor": "end" }, Math.round(t * 100) + "%"));
  }
  root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: py(0), y2: py(0) }));
  root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: py(0) }));
  for (const x of xs) {
    root.append(svg("line", { class: "axis", x1: px(x), x2: px(x), y1: py(0), y2: py(0) + 4 }));
    root.append(svg("text", { x: px(x), y: py(0) + 16, "text-anchor": "middle" }, String(+x.toFixed(4))));
  }
  root.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, opts.xLabel));
  root.append(svg("text", { x: 12, y: (T + py(0)) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + py(0)) / 2})` }, opts.yLabel));

  const points = [];
  const n = opts.series.length;
  opts.series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const dash = DASHES[i % DASHES.length];  // a dash pattern too, so curves differ without colour
    const off = (i - (n - 1) / 2) * 3;  // spread coinciding points so each stays reachable
    const pts = s.points.slice().sort((a, b) => a.x - b.x);
    const g = svg("g", { class: "series", "data-series": s.name });
    g.append(svg("polyline", {
      class: "curve", fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": dash,
      points: pts.map((p) => `${px(p.x) + off},${py(p.y)}`).join(" "),
    }));
    for (const p of pts) {
      if (p.lo !== null && p.lo !== undefined) {
        g.append(svg("line", { stroke: colour, "stroke-width": 1, opacity: 0.6, x1: px(p.x) + off, x2: px(p.x) + off, y1: py(p.lo), y2: py(p.hi) }));
      }
    }
    for (const p of pts) {
      const c = svg("circle", { class: "point", cx: px(p.x) + off, cy: py(p.y), r: 4.5, fill: colour, "data-tip": p.tip }, svg("title", {}, p.tip));
      c.addEventListener("mouseenter", (e) => { setActive(c); showTooltip(p.tip, e.clientX, e.clientY); });
      c.addEventListener("mousemove", (e) => showTooltip(p.tip, e.clientX, e.clientY));
      c.addEventListener("mouseleave", () => { hideTooltip(); c.classList.remove("active"); });
      g.append(c);
      points.push(c);
    }
    root.append(g);
  });

  let active = -1;
  function setActive(c) {
    points.forEach((p) => p.classList.remove("active"));
    c.classList.add("active");
    active = points.indexOf(c);
  }
  root.addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[e.key];
    if (!step || !points.length) return;
    e.preventDefault();
    active = active < 0 ? 0 : (active + step + points.length) % points.length;
    const c = points[active];
    setActive(c);
    const box = c.getBoundingClientRect();
    showTooltip(c.dataset.tip, box.right, box.bottom);
  });
  root.addEventListener("blur", () => { hideTooltip(); points.forEach((p) => p.classList.remove("active")); active = -1; });

  const legend = el("ul", { class: "legend" }, ...opts.series.map((s, i) => {
    const sw = svg("svg", { class: "swatch", viewBox: "0 0 22 8", width: 22, height: 8, "aria-hidden": "true" },
      svg("line", { x1: 0, x2: 22, y1: 4, y2: 4, stroke: PALETTE[i % PALETTE.length], "stroke-width": 2.5, "stroke-dasharray": DASHES[i % DASHES.length] }));
    return el("li", {}, sw, s.name);
  }));
  return el("figure", { class: "chart" }, el("figcaption", {}, el("h3", {}, opts.title)), root, legend);
}
