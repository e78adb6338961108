// btxrd-serve's page: sends dropped files to /api/classify and shows what comes back.
// Text from files and records is only ever set as textContent, never parsed as HTML.
"use strict";

const state = {
  model: null, // GET /api/model (what btxrd-run --info prints)
  alpha: 0.45, // the config's overlay opacity, from /api/health
  rows: [], // {record, view, order}
  selected: null,
  sort: { key: null, descending: false },
  pending: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

async function start() {
  try {
    const [model, health] = await Promise.all([getJson("/api/model"), getJson("/api/health")]);
    state.model = model;
    state.alpha = health.overlay_alpha;
    $("opacity").value = String(state.alpha);
    $("opacity-value").textContent = state.alpha.toFixed(2);
    $("intended-use").textContent = model.intended_use;
    $("model").textContent = describeModel(model);
  } catch (error) {
    $("model").textContent = `The server did not answer (${error.message}); is btxrd-serve running?`;
  }
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function describeModel(model) {
  const trust = model.trust || {};
  const calibration = typeof trust.calibration === "object"
    ? `calibrated (temperature ${Number(trust.calibration.temperature).toFixed(3)})`
    : "no calibration";
  const gate = typeof trust.ood_gate === "object"
    ? `out-of-distribution gate ${trust.ood_gate.method}`
    : "no out-of-distribution gate";
  return `Model ${model.file} (${model.arch}, sha256 ${model.sha256.slice(0, 12)}…): ` +
    `${model.class_names.join(" / ")}; ${calibration}; ${gate}.`;
}

// --- sending files ---------------------------------------------------------------------------

const IN_FLIGHT = 2; // the server classifies one request at a time; two keep it busy

async function classifyFiles(files) {
  const queue = Array.from(files);
  if (!queue.length) return;
  state.pending += queue.length;
  showStatus();
  const workers = Array.from({ length: Math.min(IN_FLIGHT, queue.length) }, async () => {
    while (queue.length) {
      const file = queue.shift();
      await classifyOne(file);
      state.pending -= 1;
      showStatus();
    }
  });
  await Promise.all(workers);
}

async function classifyOne(file) {
  const form = new FormData();
  form.append("files", file, file.name);
  let body;
  try {
    const response = await fetch("/api/classify", { method: "POST", body: form });
    body = await response.json();
  } catch (error) {
    body = { error: `${file.name}: the server did not answer (${error.message})` };
  }
  if (Array.isArray(body.results)) {
    body.results.forEach((record, i) => addRow(record, body.views ? body.views[i] : null));
  } else {
    // The whole request was refused (too large, busy): a row that says so, not in downloads.
    addRow(failedRecord(file.name, body.error || "no answer"), null, true);
  }
}

function failedRecord(name, message) {
  return {
    image_name: name, display_name: name, prediction: null, confidence: null, scores: {},
    path: name, error: message, notes: [], ood: null, dicom: null, timings_ms: {},
  };
}

function showStatus() {
  const done = state.rows.length;
  $("status").textContent = state.pending
    ? `Classifying… ${plural(state.pending, "file")} to go`
    : (done ? `${plural(done, "result")}. Click a row to see it; click a heading to sort.` : "");
}

function addRow(record, view, requestFailed = false) {
  const row = { record, view, order: state.rows.length, requestFailed };
  state.rows.push(row);
  renderTable();
  if (state.selected === null) select(row);
  $("download-json").disabled = $("download-csv").disabled = !exportable().length;
}

// --- the table -------------------------------------------------------------------------------

function sortValue(row, key) {
  const r = row.record;
  if (key === "name") return r.display_name.toLowerCase();
  if (key === "prediction") return r.prediction || "";
  if (key === "confidence") return r.confidence === null ? -1 : r.confidence;
  if (key === "ood") return r.ood && r.ood.score !== null ? r.ood.score : -1;
  return row.order;
}

function sortedRows() {
  const { key, descending } = state.sort;
  const rows = state.rows.slice();
  if (key === null) return rows;
  rows.sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    const order = x < y ? -1 : x > y ? 1 : a.order - b.order;
    return descending ? -order : order;
  });
  return rows;
}

function renderTable() {
  const body = $("results").tBodies[0];
  body.replaceChildren();
  for (const row of sortedRows()) {
    const r = row.record;
    const tr = el("tr");
    tr.dataset.name = r.display_name;
    if (r.error) tr.classList.add("failed");
    if (row === state.selected) tr.classList.add("selected");
    tr.append(
      el("td", r.display_name),
      el("td", r.prediction || (r.ood && r.scores && Object.keys(r.scores).length
        ? "not classified" : "error")),
      el("td", r.confidence === null ? "" : r.confidence.toFixed(3), "num"),
      el("td", r.ood && r.ood.score !== null ? r.ood.score.toFixed(3) : "", "num"),
    );
    tr.addEventListener("click", () => select(row));
    body.append(tr);
  }
}

function sortBy(key) {
  state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : false };
  for (const th of document.querySelectorAll("#results th")) {
    th.removeAttribute("aria-sort");
    if (th.dataset.key === key) {
      th.setAttribute("aria-sort", state.sort.descending ? "descending" : "ascending");
    }
  }
  renderTable();
}

// --- one result ------------------------------------------------------------------------------

function select(row) {
  state.selected = row;
  renderTable();
  const r = row.record;
  $("detail").hidden = false;
  $("detail-name").textContent = r.display_name;
  $("verdict").textContent = verdictText(r);
  $("verdict").className = "verdict" + (r.ood && !r.ood.in_distribution ? " refused" : "");
  $("detail-error").hidden = !r.error;
  $("detail-error").textContent = r.error || "";
  renderBars(r);
  renderViewer(row);
}

function verdictText(r) {
  if (!r.ood) {
    return r.error ? "" : "This model has no out-of-distribution gate: any image gets a class.";
  }
  const score = r.ood.score === null ? "not a number" : r.ood.score.toFixed(3);
  const threshold = r.ood.threshold.toFixed(3);
  if (r.ood.in_distribution) {
    return `Like the images the model was trained on (OOD score ${score} ≤ ${threshold}).`;
  }
  if (r.ood.gate === "off") {
    return `Unlike the training images (OOD score ${score} > ${threshold}); classified anyway ` +
      "because the gate is off.";
  }
  return `NOT CLASSIFIED: unlike the images the model was trained on (OOD score ${score} > ` +
    `${threshold}).`;
}

function renderBars(r) {
  const bars = $("bars");
  bars.replaceChildren();
  const names = state.model ? state.model.class_names : Object.keys(r.scores);
  if (!Object.keys(r.scores).length) return;
  for (const name of names) {
    const p = r.scores[name];
    const top = name === r.prediction ? "top" : "";
    const bar = el("div", null, "bar");
    const fill = el("div");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.append(fill);
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${name} ${p.toFixed(3)}`);
    bars.append(el("span", name, top), bar, el("span", p.toFixed(3), `num ${top}`));
  }
}

function renderViewer(row) {
  const view = row.view;
  $("viewer").hidden = $("controls").hidden = !view;
  if (!view) return;
  $("film").src = view.film;
  const select = $("cam-class");
  select.replaceChildren();
  for (const name of Object.keys(view.heatmaps)) select.append(el("option", name));
  const chosen = row.camClass || row.record.prediction;
  if (chosen && view.heatmaps[chosen]) select.value = chosen;
  showHeatmap();
}

function showHeatmap() {
  const row = state.selected;
  if (!row || !row.view) return;
  const name = $("cam-class").value;
  const layer = $("layer");
  row.camClass = name;
  layer.hidden = !name;
  if (!name) {
    $("cam-caption").textContent = "Every heatmap of this image is flat: nothing to show.";
    return;
  }
  layer.src = row.view.heatmaps[name];
  layer.style.opacity = $("opacity").value;
  $("overlay-link").href = row.view.overlays[name];
  const p = row.record.scores[name];
  let caption = `Grad-CAM of ${name} (probability ${p.toFixed(3)}): where the evidence for ` +
    `${name} is.`;
  if (name === "Normal") {
    caption += " A Normal map marks the film the model read as healthy; it does not point at a lesion.";
  }
  $("cam-caption").textContent = caption;
}

// --- downloads -------------------------------------------------------------------------------

function exportable() {
  return state.rows.filter((row) => !row.requestFailed).map((row) => row.record);
}

async function download(format) {
  const response = await fetch(`/api/export?format=${format}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ results: exportable() }),
  });
  if (!response.ok) {
    const body = await response.json();
    $("status").textContent = body.error;
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a");
  link.href = url;
  link.download = `btxrd-results.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// --- wiring ----------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    classifyFiles(event.target.files);
    event.target.value = "";
  });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    classifyFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser leave the page to open it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  for (const th of document.querySelectorAll("#results th")) {
    th.addEventListener("click", () => sortBy(th.dataset.key));
  }
  $("cam-class").addEventListener("change", showHeatmap);
  $("opacity").addEventListener("input", () => {
    $("layer").style.opacity = $("opacity").value;
    $("opacity-value").textContent = Number($("opacity").value).toFixed(2);
  });
  $("download-json").addEventListener("click", () => download("json"));
  $("download-csv").addEventListener("click", () => download("csv"));
}

wire();
start();

// "1 file", "2 files": the CLI's plural forms (btxrd.runtime.text.plural).
function plural(count, noun) {
  return `${count.toLocaleString("en")} ${noun}${count === 1 ? "" : "s"}`;
}
