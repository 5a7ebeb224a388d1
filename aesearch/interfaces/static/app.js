// The aesearch page: send an image to /api/search, show what the model understood and the hits.
"use strict";

const $ = (id) => document.getElementById(id);
let busy = false;

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    const h = await response.json();
    $("bundle").textContent =
      `${h.count.toLocaleString()} ${h.dataset || ""} images · z ${h.z_size} · ${h.index_type} index · ` +
      `${h.metric}${h.transform && h.transform !== "none" ? " after " + h.transform : ""} · aesearch ${h.version}`;
    $("k").max = Math.min(100, h.count);
  } catch (error) {
    $("bundle").textContent = "could not reach the server";
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

async function search(file) {
  if (!file || busy) return;
  busy = true;
  $("error").hidden = true;
  $("status").textContent = `Searching for ${file.name}…`;
  const k = Math.max(1, parseInt($("k").value, 10) || 8);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const started = performance.now();
    const response = await fetch(`/api/search?k=${k}`, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
      showError(detail || `the server answered ${response.status}`);
      return;
    }
    render(file, body, performance.now() - started);
  } catch (error) {
    showError(`could not reach the server: ${error.message}`);
  } finally {
    busy = false;
  }
}

function render(file, result, ms) {
  const sent = $("sent");
  if (sent.dataset.url) URL.revokeObjectURL(sent.dataset.url);
  sent.dataset.url = URL.createObjectURL(file);
  sent.src = sent.dataset.url;
  $("preprocessed").src = result.query_png;
  $("reconstruction").src = result.reconstruction_png;
  $("summary").innerHTML = "";
  const lines = [
    ["reconstruction MSE", result.reconstruction_mse.toFixed(4)],
    ["higher than", `${result.reconstruction_percentile.toFixed(1)}% of indexed images`],
    ["nearest match farther than", `${result.neighbour_percentile.toFixed(1)}% of theirs`],
  ];
  for (const [name, value] of lines) {
    const p = document.createElement("p");
    p.append(`${name}: `);
    const b = document.createElement("b");
    b.textContent = value;
    p.append(b);
    $("summary").append(p);
  }
  const warning = $("warning");
  warning.hidden = result.in_distribution;
  warning.textContent = result.in_distribution ? "" :
    "This image looks unlike anything indexed, so its neighbours mean little.";

  const list = $("hits");
  list.innerHTML = "";
  for (const hit of result.hits) {
    const item = document.createElement("li");
    item.className = "hit";
    const img = document.createElement("img");
    img.src = `/api/images/${hit.id}.png?scale=6`;
    img.alt = `${hit.path || hit.label_name}, id ${hit.id}`;
    img.loading = "lazy";
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = `#${hit.rank} ${hit.path || hit.label_name || "unlabelled"}`;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `distance ${hit.distance.toFixed(3)} · ${hit.split} · id ${hit.id}`;
    item.append(img, label, meta);
    list.append(item);
  }
  $("results").hidden = false;
  $("status").textContent = `${result.hits.length} neighbours of ${file.name} in ${Math.round(ms)} ms`;
}

function setUp() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (event) => search(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => search(event.dataTransfer.files[0]));
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file-input").click();
  });
  loadHealth();
}

setUp();
