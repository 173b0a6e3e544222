// The /ui playground: pick an image, a route and (where allowed) a chain; show every stage.
"use strict";

const state = { routes: [], file: null, validated: null, validTimer: null };

function $(id) { return document.getElementById(id); }

// A spec as text, folded into a <details> when it is long (long specs would bury the images).
function specNode(text, label) {
  if (text.length <= 60) return el("span", { class: "mono" }, text);
  return el("details", { class: "spec" }, el("summary", {}, label || text.slice(0, 40) + "…"), el("span", { class: "mono" }, text));
}

function currentRoute() {
  return state.routes.find((r) => r.name === $("route").value) || null;
}

async function loadRoutes() {
  try {
    const data = await api("/v1/models");
    state.routes = data.models;
    const sel = $("route");
    const keep = sel.value;
    sel.replaceChildren(...data.models.map((m) => el("option", { value: m.name }, m.name)));
    sel.value = keep && data.models.some((m) => m.name === keep) ? keep : data.default;
    routeChanged();
  } catch (e) {
    $("route-info").textContent = "Could not list the routes: " + e.message;
  }
}

async function loadPresets() {
  try {
    const data = await api("/v1/chains/presets");
    const sel = $("preset");
    const custom = sel.querySelector('option[value="__custom__"]');
    for (const p of data.presets) {
      if (sel.querySelector(`option[value="${CSS.escape(p.name)}"]`)) continue;
      const opt = el("option", { value: p.name }, p.name);
      opt.dataset.chain = p.chain;
      opt.dataset.description = p.description;
      sel.insertBefore(opt, custom);
    }
  } catch (e) { /* the route list reports the problem */ }
}

async function loadSamples() {
  const resp = await fetch("/ui/samples");
  const data = await resp.json();
  const sel = $("sample");
  for (const name of data.samples) sel.append(el("option", { value: name }, name));
}

function routeChanged() {
  const r = currentRoute();
  if (!r) return;
  $("route-info").replaceChildren(`${r.backend}; input ${r.input_shape.join("×")}; policy: ${r.policy}; chain: `, specNode(r.chain, "show the route's chain"));
  $("chain-box").hidden = !r.chain_override;
  if (!r.chain_override) { $("seed").value = ""; }
  checkSpec();
}

function presetChanged() {
  const opt = $("preset").selectedOptions[0];
  const custom = $("preset").value === "__custom__";
  $("spec-field").hidden = !custom;
  $("preset-info").replaceChildren(...(opt && opt.dataset.chain ? [opt.dataset.description + " ", specNode(opt.dataset.chain, "show the chain")] : []));
  checkSpec();
}

// The chain override the form asks for: null = the route's own chain.
function chosenChain() {
  const r = currentRoute();
  if (!r || !r.chain_override) return null;
  const p = $("preset").value;
  if (p === "__custom__") return $("spec").value.trim() || null;
  return p || null;
}

function showSpecError(message) {
  const box = $("spec-error");
  box.hidden = !message;
  box.textContent = message || "";
  $("spec").classList.toggle("invalid", !!message);
  $("spec").setAttribute("aria-invalid", message ? "true" : "false");
}

// Validate the custom spec as the user types (debounced); the result gates the run button.
function checkSpec() {
  clearTimeout(state.validTimer);
  state.validated = null;
  if ($("preset").value !== "__custom__" || $("chain-box").hidden) { showSpecError(""); $("spec-status").textContent = ""; return; }
  const text = $("spec").value.trim();
  if (!text) { showSpecError(""); $("spec-status").textContent = "Type a spec, or pick a preset."; return; }
  $("spec-status").textContent = "checking…";
  state.validTimer = setTimeout(() => validate(text), 250);
}

async function validate(text) {
  try {
    const res = await api("/v1/chains/validate", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ spec: text, model: $("route").value || null }),
    });
    if ($("spec").value.trim() !== text) return;  // the user typed on
    state.validated = res;
    state.validatedText = text;
    if (res.valid) {
      showSpecError("");
      $("spec-status").textContent = `valid: ${res.spec}` + (res.randomized ? " (randomised)" : "");
    } else {
      $("spec-status").textContent = "";
      showSpecError(res.error);
    }
    return res;
  } catch (e) {
    $("spec-status").textContent = "could not check the spec: " + e.message;
    return null;
  }
}

async function imageBody() {
  if (state.file) return state.file;
  const name = $("sample").value;
  if (!name) return null;
  const resp = await fetch("/ui/samples/" + encodeURIComponent(name));
  return await resp.blob();
}

function figure(title, caption, picture, alt) {
  const img = el("img", { src: "data:image/png;base64," + picture.image, alt: alt, width: picture.width, height: picture.height });
  return el("figure", {}, img, el("figcaption", {}, el("strong", {}, title), caption));
}

function showAnswer(answer, policy) {
  const box = $("answer");
  box.replaceChildren(
    el("span", {}, "Model answer: "),
    el("span", { class: "label", id: "answer-label" }, String(answer.label)),
    el("span", {}, ` (${answer.class_name})`),
    el("p", { class: "hint" }, `output policy: ${policy}` + (policy === "label" ? " — the route shows the label only, no scores" : "")),
  );
  if (answer.topk) {
    box.append(el("p", { id: "answer-topk" }, "Most likely first: " + answer.topk.map((t) => t.class_name).join(", ")));
  }
  if (answer.scores) {
    const rows = Object.entries(answer.scores).sort((a, b) => b[1] - a[1]).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v.toFixed(policy === "rounded" ? 2 : 4))));
    box.append(el("table", { id: "answer-scores" }, el("caption", { class: "hint" }, "Scores"), el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "class"), el("th", { scope: "col" }, "probability"))), el("tbody", {}, ...rows)));
  }
}

function drawnText(d) {
  if (!d) return "";
  if (d.picked) return "drew: " + d.picked.join(", ");
  if (d.applied !== undefined) return d.applied ? "drew: applied" : "drew: skipped";
  if (d.order) return "order: " + d.order.join(" → ");
  return "";
}

function showResult(res) {
  showAnswer(res.answer, res.policy);
  $("chain-used").replaceChildren("chain: ", specNode(res.chain, "show the chain that ran"), res.seed !== null ? ` · seed ${res.seed}` : res.randomized ? " · fresh randomness" : "");
  const figs = [figure("Original", el("span", { class: "mono" }, `${res.original.width}×${res.original.height} as the model gets it`), res.original, "the original image")];
  res.stages.forEach((s, i) => {
    const extra = drawnText(s.drawn);
    figs.push(el("figure", { class: "stage" },
      el("img", { src: "data:image/png;base64," + s.image, alt: `after stage ${i + 1}, ${s.name}`, width: s.width, height: s.height }),
      el("figcaption", {}, el("strong", {}, `${i + 1}. ${s.name}`), ` ${ms(s.seconds)}`, specNode(s.spec, "parameters"), extra ? el("span", { class: "drawn" }, extra) : null)));
  });
  figs.push(figure("Difference", el("span", { class: "mono" }, `largest change ${res.heatmap.max_difference}/255 (black: none)`), res.heatmap, "heat-map of the difference between the original and the purified image"));
  $("stages").replaceChildren(...figs);
  const dl = $("download");
  dl.href = "data:image/png;base64," + res.purified.image;
  $("results").hidden = false;
}

async function run(event) {
  event.preventDefault();
  $("run-error").hidden = true;
  const body = await imageBody();
  if (!body) { $("run-error").textContent = "Choose an image file or a sample first."; $("run-error").hidden = false; return; }
  const chain = chosenChain();
  if ($("preset").value === "__custom__" && !$("chain-box").hidden) {
    const text = $("spec").value.trim();
    clearTimeout(state.validTimer);
    const res = state.validated && state.validatedText === text ? state.validated : text ? await validate(text) : null;
    if (!text) showSpecError("Type a chain spec, or pick a preset.");
    if (!res || !res.valid) { $("spec").focus(); return; }  // a bad spec runs nothing
  }
  const q = new URLSearchParams({ stages: "true", model: $("route").value });
  if (chain) q.set("chain", chain);
  const seed = $("seed").value.trim();
  if (seed && !$("chain-box").hidden) q.set("seed", seed);
  $("run").disabled = true;
  $("run-status").textContent = "running…";
  try {
    const res = await api("/v1/purify?" + q.toString(), { method: "POST", headers: { "content-type": body.type || "application/octet-stream" }, body: body });
    showResult(res);
    $("run-status").textContent = `done in ${ms(Object.values(res.timing).reduce((a, b) => a + b, 0))}`;
  } catch (e) {
    $("run-status").textContent = "";
    $("run-error").textContent = e.message;
    $("run-error").hidden = false;
  } finally {
    $("run").disabled = false;
  }
}

function setupDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const f = e.dataTransfer.files[0];
    if (f) { state.file = f; $("sample").value = ""; drop.querySelector("span").textContent = "dropped: " + f.name; }
  });
  $("file").addEventListener("change", () => { state.file = $("file").files[0] || null; if (state.file) $("sample").value = ""; });
  $("sample").addEventListener("change", () => { if ($("sample").value) { state.file = null; $("file").value = ""; } });
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey(() => { loadRoutes(); loadPresets(); });
  setupDrop();
  $("route").addEventListener("change", routeChanged);
  $("preset").addEventListener("change", presetChanged);
  $("spec").addEventListener("input", checkSpec);
  $("run-form").addEventListener("submit", run);
  loadSamples();
  loadRoutes();
  loadPresets();
});
