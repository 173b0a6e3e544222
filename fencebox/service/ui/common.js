// Shared by the FenceBox pages: the API key, JSON calls to this server, and a tiny element builder.
"use strict";

const KEY_STORE = "fencebox.apiKey";

// The key the user typed (kept for this browser tab only).
function apiKey() {
  return document.getElementById("api-key").value.trim();
}

// Build an element: el("p", {class: "hint"}, "text", child, ...).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Show (or clear) the "this service needs a key" message and send the focus to the key field.
function keyProblem(message) {
  const box = document.getElementById("key-message");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = message;
  box.hidden = false;
  document.getElementById("api-key").focus();
}

// Call this server's API with the key; resolve to parsed JSON, reject with an Error carrying the
// service's message ({"error", "code"}) and the HTTP status.
async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  const key = apiKey();
  if (key) opts.headers["Authorization"] = "Bearer " + key;
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.error ? body.error : `HTTP ${resp.status}`;
    if (resp.status === 401) keyProblem("This service needs an API key: type it in the API key field above, then try again. (" + msg + ")");
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  if (resp.status !== 401) keyProblem("");
  return body;
}

function percent(x, digits) {
  return x === null || x === undefined ? "–" : (100 * x).toFixed(digits === undefined ? 0 : digits) + "%";
}

function ms(seconds) {
  return seconds < 0.001 ? (seconds * 1e6).toFixed(0) + " µs" : (seconds * 1e3).toFixed(seconds < 0.1 ? 2 : 0) + " ms";
}

// Wire the key field: remembered for this tab, and a change re-runs `onChange`.
function setupKey(onChange) {
  const input = document.getElementById("api-key");
  input.value = sessionStorage.getItem(KEY_STORE) || "";
  document.getElementById("key-form").addEventListener("submit", (e) => { e.preventDefault(); onChange(); });
  input.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    onChange();
  });
}
