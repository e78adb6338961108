// btxrd-serve's page: sends files to /api/classify and shows what comes back.
// The page renders the records the API returns; it never computes a class, a probability or a
// verdict of its own. Text from files and records is only ever set as textContent.
"use strict";

const state = {
  model: null, // GET /api/model (what btxrd-run --info prints)
  alpha: 0.45, // the config's overlay opacity, from /api/health
  rows: [], // {key, record, view, order, requestFailed}
  selected: null,
  sort: { key: null, descending: false },
  pending: 0,
  nextOrder: 0,
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
    offerFormats(health.formats);
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

// The formats this installation reads (the runtime's list; DICOM only with pydicom).
function offerFormats(formats) {
  if (!formats) return;
  const names = Object.keys(formats);
  $("files").accept = names.flatMap((name) => formats[name]).join(",");
  $("formats").textContent = `${names.join(", ")}. The files go to this computer's ` +
    "btxrd-serve only.";
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

// The same file chosen again (same name, size and date) replaces its row.
function fileKey(file) {
  return `file:${file.name}:${file.size}:${file.lastModified}`;
}

async function classifyOne(file) {
  const form = new FormData();
  form.append("files", file, file.name);
  const body = await post("/api/classify", { body: form }, file.name);
  if (Array.isArray(body.results)) {
    body.results.forEach((record, i) => {
      addRow(fileKey(file), record, body.views ? body.views[i] : null);
    });
  } else {
    // The whole request was refused (too large, busy): a row that says so, not in downloads.
    addRow(fileKey(file), failedRecord(file.name, body.error || "no answer"), null, true);
  }
}

async function trySamples() {
  $("samples").disabled = true;
  state.pending += 1;
  showStatus();
  const body = await post("/api/samples", {}, "the samples");
  state.pending -= 1;
  $("samples").disabled = false;
  if (Array.isArray(body.results)) {
    body.results.forEach((record, i) => {
      addRow(`sample:${record.image_name}`, record, body.views ? body.views[i] : null);
    });
  } else {
    addRow("sample:", failedRecord("the samples", body.error || "no answer"), null, true);
  }
  showStatus();
}

async function post(url, options, what) {
  try {
    const response = await fetch(url, { method: "POST", ...options });
    return await response.json();
  } catch (error) {
    return { error: `${what}: the server did not answer (${error.message})` };
  }
}

function failedRecord(name, message) {
  return {
    image_name: name, display_name: name, prediction: null, confidence: null, scores: null,
    path: name, error: message, notes: [], ood: null, identifiers: null, dicom: null,
    timings_ms: {},
  };
}

// What became of a record: classified, refused by the gate (no class), or failed.
function outcome(record) {
  if (record.prediction) return "classified";
  const ood = record.ood;
  if (ood && ood.gate === "on" && ood.in_distribution === false) return "refused";
  return "failed";
}

function showStatus() {
  const counts = { classified: 0, refused: 0, failed: 0 };
  for (const row of state.rows) counts[outcome(row.record)] += 1;
  const parts = [`${counts.classified.toLocaleString("en")} classified`];
  if (counts.refused) parts.push(`${counts.refused.toLocaleString("en")} not classified`);
  if (counts.failed) parts.push(`${counts.failed.toLocaleString("en")} failed`);
  let text = "";
  if (state.pending) {
    text = `Classifying… ${plural(state.pending, "request")} to go. `;
  }
  if (state.rows.length) {
    text += `${parts.join(", ")}. Click a row to see it (or Tab to it and press Enter); ` +
      "a heading sorts the table.";
  }
  $("status").textContent = text;
}

function addRow(key, record, view, requestFailed = false) {
  let row = state.rows.find((r) => r.key === key && r.record.image_name === record.image_name);
  if (row) {
    Object.assign(row, { record, view, requestFailed, camClass: null });
  } else {
    row = { key, record, view, order: state.nextOrder++, requestFailed };
    state.rows.push(row);
  }
  select(row); // the newest result opens
  const none = !exportable().length;
  $("download-json").disabled = $("download-csv").disabled = none;
  $("clear").disabled = !state.rows.length;
  showStatus();
}

async function clearAll() {
  state.rows = [];
  state.selected = null;
  renderTable();
  $("detail").hidden = true;
  $("download-json").disabled = $("download-csv").disabled = $("clear").disabled = true;
  showStatus();
  await post("/api/clear", {}, "clear"); // the server forgets the pictures too
  $("drop").focus();
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
  rows.sort((a, b) => {
    if (key === null) return a.order - b.order;
    const x = sortValue(a, key), y = sortValue(b, key);
    const order = x < y ? -1 : x > y ? 1 : a.order - b.order;
    return descending ? -order : order;
  });
  return rows;
}

const CLASS_CELL = { refused: "not classified", failed: "error" };

function renderTable() {
  const body = $("results").tBodies[0];
  const focused = document.activeElement && document.activeElement.closest("#results tbody tr");
  const focusedKey = focused ? focused.dataset.key : null;
  body.replaceChildren();
  for (const row of sortedRows()) {
    const r = row.record;
    const kind = outcome(r);
    const tr = el("tr");
    tr.dataset.name = r.display_name;
    tr.dataset.key = `${row.key}|${r.image_name}`;
    tr.tabIndex = 0;
    if (kind !== "classified") tr.classList.add(kind);
    if (row === state.selected) {
      tr.classList.add("selected");
      tr.setAttribute("aria-selected", "true");
    }
    tr.append(
      el("td", shownName(r)),
      el("td", r.prediction || CLASS_CELL[kind]),
      el("td", r.confidence === null ? "" : r.confidence.toFixed(3), "num"),
      el("td", r.ood && r.ood.score !== null ? r.ood.score.toFixed(3) : "", "num"),
    );
    tr.addEventListener("click", () => select(row));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select(row);
      }
    });
    body.append(tr);
    if (tr.dataset.key === focusedKey) tr.focus();
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
  const kind = outcome(r);
  $("detail").hidden = false;
  $("detail-name").textContent = shownName(r);
  $("verdict").textContent = kind === "classified" ? verdictText(r) : "";
  $("verdict").hidden = kind !== "classified";
  $("refusal").hidden = kind !== "refused";
  $("refusal-text").textContent = kind === "refused" ? refusalText() : "";
  $("detail-error").hidden = kind !== "failed";
  $("detail-error").textContent = kind === "failed" ? r.error : "";
  const more = detailsText(r, kind);
  $("more").hidden = !more;
  $("more").open = false;
  $("more-text").textContent = more;
  renderBars(kind === "classified" ? r : null);
  renderViewer(kind === "classified" ? row : null);
}

// A name that is not UTF-8 comes with \xNN escapes for its bytes (path_escaped): said so, so it
// is never taken for a name that holds those characters.
function shownName(r) {
  return r.path_escaped ? `${r.display_name} (name not UTF-8: \\xNN is a byte)` : r.display_name;
}

// What a refusal means, in the model's own plain words (GET /api/model).
function refusalText() {
  return (state.model && state.model.refusal_explanation) ||
    "This image is unlike the images the model was trained on, so it gives no class.";
}

function verdictText(r) {
  if (!r.ood) return "This model has no out-of-distribution gate: any image gets a class.";
  if (r.ood.in_distribution) return "Like the images the model was trained on.";
  return "Unlike the images the model was trained on; classified anyway because the gate " +
    "is off (--no-ood-gate).";
}

// The numbers behind the verdict, for whoever wants them: behind the Details toggle.
function detailsText(r, kind) {
  if (kind === "refused") return r.error; // the one refusal line, as btxrd-run prints it
  if (kind === "failed" || !r.ood) return "";
  const score = r.ood.score === null ? "not a number" : r.ood.score.toFixed(3);
  const side = r.ood.in_distribution ? "within" : "above";
  return `Out-of-distribution score ${score}, ${side} the threshold ` +
    `${r.ood.threshold.toFixed(3)} (${r.ood.method}).`;
}

function renderBars(r) {
  const bars = $("bars");
  bars.replaceChildren();
  bars.hidden = !r || !r.scores;
  if (bars.hidden) return;
  const names = state.model ? state.model.class_names : Object.keys(r.scores);
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
  const view = row ? row.view : null;
  $("viewer").hidden = $("controls").hidden = !view;
  $("cam-caption").textContent = "";
  $("overlay-link").removeAttribute("href");
  if (!view) return;
  $("film").src = view.film;
  const select = $("cam-class");
  select.replaceChildren();
  for (const name of Object.keys(view.heatmaps)) select.append(el("option", name));
  const chosen = row.camClass || row.record.prediction;
  if (chosen && view.heatmaps[chosen]) select.value = chosen;
  showHeatmap();
  if ($("film").complete) fitFilm(); // the same film again fires no load event
}

// The film fills the panel's width (small films are scaled up), never taller than the window.
function fitFilm() {
  const film = $("film");
  if (!film.naturalWidth || $("viewer").hidden) return;
  const width = Math.max($("viewer").clientWidth, 1);
  const height = Math.max(window.innerHeight * 0.7, 200);
  const scale = Math.min(width / film.naturalWidth, height / film.naturalHeight);
  film.style.width = `${Math.floor(film.naturalWidth * scale)}px`;
  film.style.height = `${Math.floor(film.naturalHeight * scale)}px`;
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
  // The drop zone is a button: a click, Enter or Space opens the file chooser.
  drop.addEventListener("click", () => $("files").click());
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
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.key));
  }
  $("samples").addEventListener("click", trySamples);
  $("clear").addEventListener("click", clearAll);
  $("cam-class").addEventListener("change", showHeatmap);
  $("opacity").addEventListener("input", () => {
    $("layer").style.opacity = $("opacity").value;
    $("opacity-value").textContent = Number($("opacity").value).toFixed(2);
  });
  $("film").addEventListener("load", fitFilm);
  window.addEventListener("resize", fitFilm);
  $("download-json").addEventListener("click", () => download("json"));
  $("download-csv").addEventListener("click", () => download("csv"));
}

wire();
start();

// "1 file", "2 files": the CLI's plural forms (btxrd.runtime.text.plural).
function plural(count, noun) {
  return `${count.toLocaleString("en")} ${noun}${count === 1 ? "" : "s"}`;
}
