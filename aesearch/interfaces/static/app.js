// The aesearch page: search with a file or a sketch, see what the model understood, steer the hits.
// Marks ("more like this" / "less like this") live here and go with every search; the server keeps
// no state between requests. No inline handlers or styles: everything is wired with addEventListener.
import { setUpMap } from "/static/map.js";
import { setUpSketch } from "/static/sketch.js";

const $ = (id) => document.getElementById(id);

const state = {
  query: null, // { blob, name, sketch } or { id, name }: what is searched (an upload, or an indexed image)
  marks: new Map(), // id -> "more" | "less"
  sequence: 0, // the latest request; older answers are dropped
  inFlight: false,
  pending: false, // a newer search is waiting for the one in flight
};

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    const h = await response.json();
    const images = h.dataset === "folders" ? "images from your folders" : `${h.dataset || ""} images`;
    $("bundle").textContent =
      `${h.count.toLocaleString()} ${images} · z ${h.z_size} · ${h.index_type} index · ` +
      `${h.metric}${h.transform && h.transform !== "none" ? " after " + h.transform : ""} · aesearch ${h.version}`;
    $("k").max = Math.min(100, h.count);
    describeModelInput(h.model_config || {});
    sketchPad.useFraming((h.model_config || {}).framing || "silhouette");
    // The example filter names one of this collection's own classes (not Fashion-MNIST's Shirt).
    $("where").placeholder = h.example_label
      ? `label = ${h.example_label} and not path ~ "old/**"`
      : 'not path ~ "old/**"';
  } catch (error) {
    $("bundle").textContent = "could not reach the server";
  }
}

// What the page says about the model's input follows the bundle's model: the Fashion-MNIST contract
// (28×28 grey silhouettes) or a model trained on a collection (its size, colour and aspect kept).
function describeModelInput(config) {
  const size = config.image_size ? `${config.image_size}×${config.image_size}` : "28×28";
  $("preprocessed-caption").textContent = `preprocessed ${size}`;
  $("preprocessed").alt = `the preprocessed ${size}`;
  $("preprocessing").textContent =
    config.framing === "photo"
      ? `The query is framed as the collection's images were (${config.channels === 1 ? "grey" : "colour"}, ` +
        `aspect kept, fitted to ${size} on its own background colour),`
      : `The query is preprocessed as Fashion-MNIST was made (trimmed, fitted to ${size}, light object on black),`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

function setQuery(blob, name, sketch, id) {
  state.query = id === undefined ? { blob, name, sketch } : { id, name };
  state.marks.clear(); // marks belong to one query
}

let mapView = null; // the map (map.js): places the query, limits searches to a selection
let sketchPad = null; // the sketch canvas (sketch.js): its default ink follows the bundle's framing

// One search at a time; while one is in flight only the newest request waits (a sketch changes fast).
async function search() {
  if (!state.query) return;
  // The neighbours box, read as typed: 0, -5, 1e3 or "abc" were turned into 8 or 1 hits without a word.
  const typed = $("k").value.trim();
  const most = Number($("k").max) || 100;
  if (!/^[0-9]+$/.test(typed) || Number(typed) < 1 || Number(typed) > most) {
    showError(`neighbours: give a whole number from 1 to ${most}, got ${typed ? `"${typed}"` : "nothing"}`);
    return;
  }
  const k = Number(typed);
  if (state.inFlight) {
    state.pending = true;
    return;
  }
  state.inFlight = true;
  state.pending = false;
  const sequence = ++state.sequence;
  const query = state.query;
  const { blob, name, sketch } = query;
  $("error").hidden = true;
  if (!sketch) $("status").textContent = `Searching for ${name}…`;
  const params = new URLSearchParams({ k: String(k) });
  const more = [...state.marks].filter(([, m]) => m === "more").map(([id]) => id);
  const less = [...state.marks].filter(([, m]) => m === "less").map(([id]) => id);
  if (more.length) params.set("more", more.join(","));
  if (less.length) params.set("less", less.join(","));
  if ($("explain").checked) params.set("explain", "true");
  for (const [key, value] of Object.entries(mapView?.params() || {})) params.set(key, value);
  if (query.id !== undefined) params.set("id", String(query.id));
  const form = new FormData();
  if (blob) form.append("image", blob, name);
  // the filter box and a map selection narrow together; a form field: a lasso's long id list fits
  const filters = [$("where").value.trim(), mapView?.where()].filter(Boolean);
  const where = filters.length > 1 ? filters.map((w) => `(${w})`).join(" and ") : filters[0];
  if (where) form.append("where", where);
  try {
    const started = performance.now();
    const response = await fetch(`/api/search?${params}`, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (sequence !== state.sequence || state.query !== query) return; // superseded
    if (!response.ok) {
      const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
      showError(detail || `the server answered ${response.status}`);
      return;
    }
    render(body, performance.now() - started);
  } catch (error) {
    showError(`could not reach the server: ${error.message}`);
  } finally {
    state.inFlight = false;
    if (state.pending) search();
  }
}

function picture(src, alt, className) {
  const img = document.createElement("img");
  img.src = src;
  img.alt = alt;
  if (className) img.className = className;
  return img;
}

function render(result, ms) {
  const { blob, name, sketch, id } = state.query;
  const sent = $("sent");
  if (sent.dataset.url) URL.revokeObjectURL(sent.dataset.url);
  sent.dataset.url = blob ? URL.createObjectURL(blob) : "";
  sent.src = blob ? sent.dataset.url : `/api/images/${id}.png?scale=6`;
  $("preprocessed").src = result.query_png;
  $("reconstruction").src = result.reconstruction_png;
  if (sketch) {
    $("sketch-reconstruction").src = result.reconstruction_png;
    $("sketch-reconstruction").hidden = false;
  }
  $("summary").replaceChildren();
  const lines = [
    ["reconstruction MSE", result.reconstruction_mse.toFixed(4)],
    ["higher than", `${result.reconstruction_percentile.toFixed(1)}% of indexed images`],
    ["nearest match farther than", `${result.neighbour_percentile.toFixed(1)}% of theirs`],
  ];
  for (const [label, value] of lines) {
    const p = document.createElement("p");
    p.append(`${label}: `);
    const b = document.createElement("b");
    b.textContent = value;
    p.append(b);
    $("summary").append(p);
  }
  const warning = $("warning");
  warning.hidden = result.in_distribution;
  warning.textContent = result.in_distribution ? "" :
    "This image looks unlike anything indexed, so its neighbours mean little.";

  renderMarks(result.marked || []);
  const explanations = new Map((result.explanations || []).map((e) => [e.id, e]));
  $("explain-key").hidden = explanations.size === 0;
  const list = $("hits");
  list.classList.toggle("explaining", explanations.size > 0); // wider cards: the strip stays readable at k = 50
  list.replaceChildren();
  for (const hit of result.hits) list.append(hitItem(hit, explanations.get(hit.id)));
  $("results").hidden = false;
  const refined = result.more_like ? ` (refined by ${state.marks.size} marks)` : "";
  const within = result.where ? ` within ${result.where}` : "";
  $("status").textContent = `${result.hits.length} neighbours of ${name}${refined}${within} in ${Math.round(ms)} ms`;
  mapView?.showResult(result);
}

function hitItem(hit, explanation) {
  const item = document.createElement("li");
  item.className = "hit";
  item.dataset.id = hit.id;
  const mark = state.marks.get(hit.id);
  if (mark) item.classList.add(`marked-${mark}`);
  const name = hit.path || hit.label_name || "unlabelled";
  const img = picture(`/api/images/${hit.id}.png?scale=6`, `${name}, id ${hit.id}`);
  img.loading = "lazy";
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = `#${hit.rank} ${name}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `distance ${hit.distance.toFixed(3)} · ${hit.split} · id ${hit.id}`;
  item.append(img, label, meta);
  if (explanation) {
    const box = document.createElement("div");
    box.className = "explanation";
    box.append(
      picture(explanation.pixel_difference_png, "pixel difference, hit minus query", "diff"),
      picture(explanation.reconstruction_difference_png, "reconstruction difference, hit minus query", "diff"),
      picture(explanation.interpolation_png, `the decoder along z from the query to the hit, ${explanation.steps} steps`,
        "path"),
    );
    item.append(box);
  }
  const buttons = document.createElement("div");
  buttons.className = "feedback";
  for (const [kind, text] of [["more", "+ more like this"], ["less", "\u2212 less like this"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `mark-${kind}`;
    button.textContent = text;
    button.setAttribute("aria-pressed", String(mark === kind));
    button.addEventListener("click", () => {
      if (state.marks.get(hit.id) === kind) state.marks.delete(hit.id);
      else state.marks.set(hit.id, kind);
      search();
    });
    buttons.append(button);
  }
  item.append(buttons);
  return item;
}

function renderMarks(marked) {
  const list = $("marked");
  list.replaceChildren();
  for (const hit of marked) {
    const item = document.createElement("li");
    item.className = `mark marked-${hit.mark}`;
    const button = document.createElement("button");
    button.type = "button";
    button.title = `remove the mark on id ${hit.id}`;
    const name = hit.path || hit.label_name || "unlabelled";
    button.append(picture(`/api/images/${hit.id}.png?scale=3`, `${name}, id ${hit.id}`));
    const text = document.createElement("span");
    text.textContent = `${hit.mark === "more" ? "+ more" : "\u2212 less"}: ${name} · ${hit.id}`;
    button.append(text);
    button.addEventListener("click", () => {
      state.marks.delete(hit.id);
      search();
    });
    item.append(button);
    list.append(item);
  }
  $("marks").hidden = marked.length === 0;
}

function setUp() {
  const drop = $("drop");
  const searchFile = (file) => {
    if (!file) return;
    setQuery(file, file.name, false);
    search();
  };
  $("file-input").addEventListener("change", (event) => searchFile(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => searchFile(event.dataTransfer.files[0]));
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file-input").click();
  });
  $("explain").addEventListener("change", () => search());
  $("k").addEventListener("change", () => search());
  $("where").addEventListener("change", () => search()); // Enter or leaving the box: not every keystroke
  $("clear-marks").addEventListener("click", () => {
    state.marks.clear();
    search();
  });
  sketchPad = setUpSketch({
    onSketch(blob) {
      setQuery(blob, "sketch.png", true);
      search();
    },
    onClear() {
      $("sketch-reconstruction").removeAttribute("src");
      $("sketch-reconstruction").hidden = true;
    },
  });
  mapView = setUpMap({
    root: $("map-view"),
    controls: document.querySelector(".controls"),
    onSearchId(id) {
      setQuery(null, `image ${id}`, false, id);
      search();
    },
    onMarks(ids, kind) { // a lasso selection marked "more like" / "less like" the current query
      for (const id of ids) state.marks.set(id, kind);
      search();
    },
    onLimit: () => search(),
    onReady: () => search(), // the current query, placed on the new layout
  });
  loadHealth();
}

setUp();
