// The Duplicates view: groups at a threshold, a page at a time; the copy to keep (the server's rule,
// or the one clicked); export the decisions; move the others (only when the server allows moves).
// Choices live here as a set of kept ids and go with every export or move: the server decides from
// them with the same library function as `aesearch duplicates --keep`.

const $ = (id) => document.getElementById(id);
const PER_PAGE = 24;

const state = {
  threshold: 0.02,
  page: 1,
  keep: new Set(), // ids the user chose to keep (one per group at most)
  sequence: 0, // the newest request; older answers are dropped
  timer: null,
  poll: null,
  last: null, // the last answer shown
  loaded: false,
  prepared: false,
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function buildView(root) {
  root.append(
    el("h2", {}, "Duplicate review"),
    el("p", { id: "dup-summary", class: "muted" }, "Open to find exact and near-duplicate images."),
    el(
      "div",
      { class: "dup-controls" },
      el("label", { htmlFor: "dup-threshold" }, "threshold"),
      el("input", { id: "dup-threshold", type: "range", min: "0", max: "0.05", step: "0.001", value: "0.02" }),
      el("output", { id: "dup-threshold-value", htmlFor: "dup-threshold" }, "0.020"),
      el("button", { id: "dup-export-json", type: "button" }, "Export JSON"),
      el("button", { id: "dup-export-csv", type: "button" }, "Export CSV"),
    ),
    el(
      "form",
      { id: "dup-move", class: "dup-move" },
      el("label", { htmlFor: "dup-target" }, "Move the copies not kept into"),
      el("input", { id: "dup-target", type: "text", placeholder: "/a/folder/outside/the/collection", autocomplete: "off" }),
      el("button", { id: "dup-move-button", type: "submit" }, "Move"),
    ),
    el("p", { id: "dup-note", class: "muted" }),
    el("p", { id: "dup-status", class: "muted", role: "status" }),
    el("p", { id: "dup-result", role: "status" }), // what the last export or move did: loads leave it
    el("p", { id: "dup-error", class: "error", role: "alert", hidden: true }),
    el("ol", { id: "dup-groups", class: "dup-groups" }),
    el(
      "nav",
      { class: "dup-pager", "aria-label": "pages of groups" },
      el("button", { id: "dup-prev", type: "button" }, "‹ previous"),
      el("span", { id: "dup-page" }),
      el("button", { id: "dup-next", type: "button" }, "next ›"),
    ),
  );
}

function showError(message) {
  $("dup-error").textContent = message;
  $("dup-error").hidden = !message;
}

async function detail(response) {
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return response.statusText;
  }
}

// Load a page of groups. While the server finds the pairs (once per bundle state) it answers 202:
// poll, and the page stays usable meanwhile.
async function load() {
  clearTimeout(state.poll);
  const sequence = ++state.sequence;
  const params = new URLSearchParams({ threshold: String(state.threshold), page: String(state.page), per_page: String(PER_PAGE) });
  let response;
  try {
    response = await fetch(`/api/duplicates?${params}`);
  } catch {
    if (sequence === state.sequence) showError("could not reach the server");
    return;
  }
  if (sequence !== state.sequence) return;
  if (response.status === 202) {
    const body = await response.json();
    $("dup-status").textContent = `Finding duplicate pairs (once for this state of the bundle)… ${body.seconds} s`;
    state.poll = setTimeout(load, 400);
    return;
  }
  if (!response.ok) {
    showError(await detail(response));
    return;
  }
  showError("");
  render(await response.json());
}

function scheduleLoad(delay = 120) {
  clearTimeout(state.timer);
  state.timer = setTimeout(load, delay);
}

function formatBytes(n) {
  if (!n) return "no file";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function keptIn(group) {
  const mine = group.members.find((m) => state.keep.has(m.id));
  return mine ? mine.id : group.keep;
}

function render(answer) {
  state.last = answer;
  state.page = answer.page;
  $("dup-summary").textContent =
    `${answer.n_images.toLocaleString()} images indexed · ${answer.groups_total.toLocaleString()} groups, ` +
    `${answer.images_in_groups.toLocaleString()} images at distance ≤ ${answer.threshold} · keep rule: ${answer.rule}`;
  $("dup-status").textContent = answer.pairs_from_cache ? "" : `Pairs found in ${answer.pairs_seconds} s (${answer.method}).`;
  $("dup-page").textContent = `page ${answer.page} of ${answer.pages}`;
  $("dup-prev").disabled = answer.page <= 1;
  $("dup-next").disabled = answer.page >= answer.pages;
  const canMove = answer.allow_moves && answer.has_files;
  for (const id of ["dup-target", "dup-move-button"]) $(id).disabled = !canMove;
  $("dup-note").textContent = !answer.has_files
    ? "A dataset bundle has no files: its decisions can be exported, not moved."
    : answer.allow_moves
      ? "Moving writes a journal into that folder; `aesearch duplicates --undo JOURNAL` puts every file back."
      : "This server is read-only: start it with `aesearch serve --allow-moves` to move files from this page.";
  const list = $("dup-groups");
  list.replaceChildren(...answer.groups.map(renderGroup));
  if (!answer.groups.length) list.append(el("li", { class: "muted" }, "No duplicates at this threshold."));
}

function renderGroup(group) {
  const kept = keptIn(group);
  const distance = group.exact ? "exact copies" : `distance ≤ ${group.max_distance.toFixed(4)}`;
  const reason = group.members.some((m) => state.keep.has(m.id)) ? "your choice" : `rule: ${group.reason}`;
  const members = group.members.map((m) => {
    const size = m.width ? `${m.width}×${m.height}` : "size unknown";
    const when = m.mtime_ns ? new Date(m.mtime_ns / 1e6).toISOString().slice(0, 10) : "";
    const item = el(
      "li",
      { class: `dup-member ${m.id === kept ? "keep" : "move"}`, dataset: { id: String(m.id) } },
      el(
        "button",
        { type: "button", title: "keep this copy", "aria-pressed": String(m.id === kept) },
        el("img", { src: `/api/images/${m.id}.png?scale=4`, alt: `image ${m.id}`, loading: "lazy", width: 112, height: 112 }),
        el("span", { class: "badge" }, m.id === kept ? "keep" : "move"),
      ),
      el("div", { class: "dup-path" }, m.path || `id ${m.id}`),
      el("div", { class: "meta" }, `${size} · ${formatBytes(m.bytes)}${when ? " · " + when : ""}`),
    );
    item.querySelector("button").addEventListener("click", () => choose(group, m.id));
    return item;
  });
  return el(
    "li",
    { class: "dup-group", dataset: { group: String(group.group) } },
    el("div", { class: "dup-head" }, `Group ${group.group} · ${group.members.length} images · ${distance} · ${reason}`),
    el("ol", { class: "dup-members" }, ...members),
  );
}

function choose(group, id) {
  for (const m of group.members) state.keep.delete(m.id);
  if (id !== group.keep) state.keep.add(id); // the rule's own choice needs no mark
  const node = document.querySelector(`.dup-group[data-group="${group.group}"]`);
  if (node) node.replaceWith(renderGroup(group));
}

async function exportDecisions(format) {
  showError("");
  const response = await fetch("/api/duplicates/export", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ threshold: state.threshold, keep: [...state.keep], format }),
  });
  if (!response.ok) {
    showError(await detail(response));
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `duplicates-${state.threshold}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  $("dup-result").textContent = `Exported the decisions as ${format.toUpperCase()}.`;
}

async function move(event) {
  event.preventDefault();
  const target = $("dup-target").value.trim();
  if (!target) {
    showError("name the folder to move the copies into");
    return;
  }
  showError("");
  $("dup-move-button").disabled = true;
  $("dup-status").textContent = `Moving the copies not kept into ${target}…`;
  try {
    const response = await fetch("/api/duplicates/move", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ threshold: state.threshold, keep: [...state.keep], target }),
    });
    if (!response.ok) {
      showError(await detail(response));
      $("dup-status").textContent = "";
      return;
    }
    const done = await response.json();
    state.keep.clear();
    state.page = 1;
    $("dup-status").textContent = "";
    $("dup-result").textContent =
      `Moved ${done.moved} files of ${done.groups} groups. Journal: ${done.journal} (undo: ${done.undo}).` +
      (done.sync_problem ? ` ${done.sync_problem}` : "");
    await load(); // the bundle after the sync: the server reloads it and finds its pairs again
  } finally {
    $("dup-move-button").disabled = !(state.last && state.last.allow_moves && state.last.has_files);
  }
}

function showView() {
  const duplicates = location.hash === "#duplicates";
  $("duplicates-view").hidden = !duplicates;
  $("search-view").hidden = duplicates;
  for (const link of document.querySelectorAll(".views a")) {
    link.setAttribute("aria-current", String(link.getAttribute("href") === (duplicates ? "#duplicates" : "#search")));
  }
  if (duplicates && !state.loaded) {
    state.loaded = true;
    load();
  } else if (!duplicates && !state.prepared) {
    state.prepared = true; // the pairs take seconds to find: start while the user searches
    fetch("/api/duplicates/prepare").catch(() => {});
  }
}

function setUp() {
  const root = $("duplicates-view");
  if (!root) return;
  buildView(root);
  $("dup-threshold").addEventListener("input", (event) => {
    state.threshold = Number(event.target.value);
    $("dup-threshold-value").textContent = state.threshold.toFixed(3);
    state.page = 1;
    scheduleLoad(); // a slider fires many events: only the value it rests on is asked for
  });
  $("dup-prev").addEventListener("click", () => {
    state.page = Math.max(1, state.page - 1);
    load();
  });
  $("dup-next").addEventListener("click", () => {
    state.page += 1;
    load();
  });
  $("dup-export-json").addEventListener("click", () => exportDecisions("json"));
  $("dup-export-csv").addEventListener("click", () => exportDecisions("csv"));
  $("dup-move").addEventListener("submit", move);
  window.addEventListener("hashchange", showView);
  showView();
}

setUp();
