// The page's latent map: every indexed image a point, drawn with WebGL (regl-scatterplot, vendored),
// coloured by class or folder. Hover a point for its thumbnail and path, click it to search by it;
// the current query and its hits are marked; a lasso selects points to mark "more like" / "less
// like", to limit searches to, or to export. The server computes the layout once, in the
// background (GET /api/map, polled for progress), and sends the points as one binary of 14-byte
// records (docs/map.md). app.js owns searching: this module tells it what to do through callbacks.
import createScatterplot from "/static/vendor/regl-scatterplot.js";

const POINT_BYTES = 14; // x, y float32; id uint32; category uint16 (quality/map_points.py)
const MAX_MARKS = 1000; // the server's limit on more= / less= ids a search (steering.MAX_MARKS)
const MAX_LIMIT_IDS = 100_000; // ids sent as `where id in (...)`: about 700 KB of form field
const POLL_MS = 400;
// While the view moves, past this many points only the first this many are drawn (the server sends
// them shuffled: a random sample); all of them once the view has rested REST_MS. A CPU-rendered
// frame (SwiftShader, no GPU) costs ~0.5 us a point: a million points pan at 2 frames a second,
// fifty thousand at ~14 (docs/map.md).
const MOTION_POINTS = 50_000;
const REST_MS = 500;
// Tableau 20, reordered so the first ten are far apart; "other" and "unlabelled" are grey.
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
  "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d", "#6b6ecf",
];
const GREY = "#9e9e9e";
const METHODS = { pca: "PCA", tsne: "t-SNE" };

const TEMPLATE = `
  <div class="map-head">
    <h2>Map</h2>
    <button id="map-show" type="button" aria-expanded="false">Show the map</button>
    <label class="map-method">layout
      <select id="map-method">
        <option value="pca">PCA, every image</option>
        <option value="tsne">t-SNE, 10,000 of them (slow)</option>
      </select>
    </label>
    <span id="map-status" class="muted" role="status"></span>
    <progress id="map-progress" max="1" value="0" hidden></progress>
  </div>
  <div id="map-body" class="map-body" hidden>
    <div class="map-tools">
      <button id="map-lasso" type="button" aria-pressed="false">Lasso</button>
      <button id="map-reset" type="button">Reset view</button>
      <span class="muted">drag to pan, scroll to zoom, shift-drag (or Lasso) to select; click a point to search by it</span>
    </div>
    <div id="map-frame" class="map-frame">
      <canvas id="map-canvas" aria-label="Latent map: one point per indexed image"></canvas>
      <svg id="map-marks" class="map-marks" aria-hidden="true"></svg>
      <div id="map-tip" class="map-tip" hidden>
        <img id="map-tip-image" alt="">
        <div id="map-tip-path" class="map-tip-path"></div>
        <div id="map-tip-meta" class="muted"></div>
      </div>
    </div>
    <div id="map-selection" class="map-selection" hidden>
      <b id="map-selected"></b>
      <button id="map-more" type="button" class="mark-more">+ more like</button>
      <button id="map-less" type="button" class="mark-less">\u2212 less like</button>
      <button id="map-limit" type="button">Limit searches to these</button>
      <button id="map-json" type="button">Export JSON</button>
      <button id="map-csv" type="button">Export CSV</button>
      <button id="map-clear" type="button">Clear</button>
      <span id="map-note" class="muted"></span>
    </div>
    <ul id="map-legend" class="map-legend"></ul>
  </div>`;

/**
 * Build the map view inside `root`; returns what app.js asks of it.
 * @param {{root: HTMLElement, controls: HTMLElement, onSearchId: (id: number) => void,
 *          onMarks: (ids: number[], kind: string) => void, onLimit: () => void, onReady: () => void}} hooks
 */
export function setUpMap({ root, controls, onSearchId, onMarks, onLimit, onReady }) {
  root.innerHTML = TEMPLATE; // fixed markup: nothing from the server goes through innerHTML
  const $ = (id) => root.querySelector(`#${id}`);
  const chip = document.createElement("span");
  chip.id = "map-chip";
  chip.className = "chip";
  chip.hidden = true;
  const chipText = document.createElement("span");
  const chipClose = document.createElement("button");
  chipClose.type = "button";
  chipClose.textContent = "\u00d7";
  chipClose.title = "search every image again";
  chipClose.setAttribute("aria-label", "remove the limit to the selected images");
  chip.append(chipText, chipClose);
  controls.append(chip);

  const map = {
    plot: null,
    method: null, // the layout drawn
    loading: 0, // the newest load; older ones stop
    summary: null, // GET /api/map's answer for the layout drawn
    ids: null, x: null, y: null, codes: null, // per point; x, y in the plot's [-1, 1]
    norm: null, // layout coordinates -> [-1, 1]: (v - centre) / half
    width: 0, height: 0,
    selection: [], // point indices
    lassoing: false,
    lassoEnded: false, // since the last press: the lasso's closing "click" is no click
    lassoPolygon: null, // the last lasso, in the plot's coordinates (for the benchmark's oracle)
    drawn: false, // the points are on screen: moving the view may now draw a sample of them
    coarse: false, // drawing MOTION_POINTS of them while the view moves
    restTimer: 0,
    reloading: false,
    placing: false, // the search in flight asked to be placed on the map
    result: null, // the latest search answer
    limited: null, // ids searches are limited to, or null
    records: new Map(), // id -> record, for the hover card
    hovered: -1,
    timings: {}, // for scripts/bench_map_page.py
  };

  const status = (text) => { $("map-status").textContent = text; };

  async function show() {
    const body = $("map-body");
    const opening = body.hidden;
    body.hidden = !opening;
    $("map-show").textContent = opening ? "Hide the map" : "Show the map";
    $("map-show").setAttribute("aria-expanded", String(opening));
    if (opening && map.method !== $("map-method").value) await load($("map-method").value);
    else if (opening) resize();
  }

  async function load(method, notReadyTries = 0) {
    const token = ++map.loading;
    map.timings = { asked: performance.now() };
    const progress = $("map-progress");
    let summary;
    for (;;) {
      let response;
      try {
        response = await fetch(`/api/map?method=${method}`);
        summary = await response.json();
      } catch (error) {
        status(`could not reach the server: ${error.message}`);
        return;
      }
      if (token !== map.loading) return;
      if (!response.ok || summary.state === "failed") {
        progress.hidden = true;
        status(summary.detail || `the server answered ${response.status}`);
        return;
      }
      if (summary.state === "ready") break;
      progress.hidden = false;
      progress.value = summary.progress;
      status(`computing the ${METHODS[method]} layout\u2026 ${Math.round(summary.progress * 100)}% (${summary.seconds} s)`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (token !== map.loading) return;
    }
    progress.hidden = true;
    map.timings.ready = performance.now();
    status(`loading ${summary.points.toLocaleString()} points\u2026`);
    const response = await fetch(`/api/map/points?method=${method}`);
    if (response.status === 409 && notReadyTries < 30) {
      // Another server process answered, whose layout is not ready yet (`serve --workers 2`, each
      // with its own): ask again, as for a layout being computed.
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (token !== map.loading) return;
      return load(method, notReadyTries + 1);
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      status(body.detail || `the server answered ${response.status}`);
      return;
    }
    const buffer = await response.arrayBuffer();
    if (token !== map.loading) return;
    if (response.headers.get("X-Map-Generation") !== String(summary.generation)) return load(method); // changed
    map.timings.fetched = performance.now();
    await draw(method, summary, buffer);
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))); // painted
    if (token !== map.loading) return;
    map.timings.drawn = performance.now();
    map.drawn = true;
    onReady(); // search again, so the current query is placed on this layout
  }

  async function draw(method, summary, buffer) {
    const n = buffer.byteLength / POINT_BYTES;
    const rawX = new Float32Array(buffer, 0, n);
    const rawY = new Float32Array(buffer, 4 * n, n);
    map.ids = new Uint32Array(buffer, 8 * n, n);
    map.codes = new Uint16Array(buffer, 12 * n, n);
    const [x0, y0, x1, y1] = summary.bounds;
    const half = (Math.max(x1 - x0, y1 - y0) / 2) * 1.04 || 1; // one scale for both axes: distances stay true
    map.norm = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, half };
    map.x = new Float32Array(n);
    map.y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      map.x[i] = (rawX[i] - map.norm.cx) / half;
      map.y[i] = (rawY[i] - map.norm.cy) / half;
    }
    map.method = method;
    map.summary = summary;
    map.drawn = false;
    map.selection = [];
    map.records.clear();
    setSelection([]);
    const plot = ensurePlot();
    const colours = summary.categories.map((name, c) =>
      name === "other" || name === "unlabelled" ? GREY : PALETTE[c % PALETTE.length]);
    plot.set({
      pointColor: colours.length ? colours : [GREY],
      pointSize: n > 300_000 ? 1.5 : n > 50_000 ? 2.5 : n > 5_000 ? 4 : 7,
      opacity: n > 300_000 ? 0.6 : 0.85,
    });
    if (map.coarse) await rest();
    plot.deselect({ preventEvent: true });
    home();
    await plot.draw({ x: map.x, y: map.y, z: map.codes }, { zDataType: "categorical" });
    renderLegend(summary, colours);
    const count = summary.count.toLocaleString();
    status(n < summary.points
      ? `showing ${n.toLocaleString()} of ${count} images: a sample stratified by ${summary.kind} ` +
        `(the page is sent at most ${summary.limit.toLocaleString()} points), ${METHODS[method]}`
      : summary.points < summary.count
        ? `showing ${n.toLocaleString()} of ${count} images: ${METHODS[method]} lays out a sample`
        : `${n.toLocaleString()} images, ${METHODS[method]} of the search space, coloured by ${summary.kind}`);
    placeMarks();
  }

  function ensurePlot() {
    if (map.plot) return map.plot;
    const canvas = $("map-canvas");
    const { width, height } = $("map-frame").getBoundingClientRect();
    map.width = width;
    map.height = height;
    const plot = createScatterplot({
      canvas,
      width,
      height,
      backgroundColor: [1, 1, 1, 1],
      colorBy: "valueA", // the category
      pointColorHover: "#000000",
      pointColorActive: "#ff2d55",
      pointSizeSelected: 1,
      lassoColor: [0.1, 0.1, 0.1, 1],
      lassoMinDelay: 0,
      lassoMinDist: 2,
      actionKeyMap: { lasso: "shift", merge: "meta" }, // no rotation: north stays up
      spatialIndexUseWorker: false, // its worker is built from a blob, which the page's CSP refuses
      lassoInitiator: false,
      lassoOnLongPress: false,
    });
    plot.subscribe("pointOver", (index) => hover(index));
    plot.subscribe("pointOut", () => hover(-1));
    plot.subscribe("view", () => { placeMarks(); hover(map.hovered); moving(); });
    plot.subscribe("lassoStart", () => {
      map.lassoing = true;
      if (map.coarse) rest(); // the lasso selects among all the points, not the motion sample
    });
    plot.subscribe("lassoEnd", ({ coordinates }) => {
      map.lassoing = false;
      map.lassoEnded = true;
      map.lassoPolygon = coordinates;
    });
    plot.subscribe("deselect", () => setSelection([]));
    plot.subscribe("select", ({ points }) => {
      if (map.lassoing) {
        setSelection(points);
        return;
      }
      // A click on a point: search by it, and keep the lasso selection it would have replaced.
      // A lasso closed where it began ends in a "click" too: that one searches nothing.
      if (map.selection.length) plot.select(map.selection, { preventEvent: true });
      else plot.deselect({ preventEvent: true });
      if (points.length === 1 && !map.lassoEnded) onSearchId(map.ids[points[0]]);
    });
    canvas.addEventListener("pointerdown", () => { map.lassoEnded = false; }, { capture: true });
    canvas.addEventListener("pointerup", () => { map.timings.pointerUp = performance.now(); }, { capture: true });
    new ResizeObserver(() => resize()).observe($("map-frame"));
    map.plot = plot;
    return plot;
  }

  // Level of detail: a random sample of the points while the view moves, all of them at rest.
  function moving() {
    if (!map.drawn || map.ids.length <= MOTION_POINTS) return;
    if (!map.coarse) {
      map.coarse = true;
      map.plot.filter(Array.from({ length: MOTION_POINTS }, (_, i) => i), { preventEvent: true });
    }
    clearTimeout(map.restTimer);
    map.restTimer = setTimeout(rest, REST_MS);
  }

  async function rest() {
    clearTimeout(map.restTimer);
    map.coarse = false;
    await map.plot.unfilter({ preventEvent: true });
    // filter() dropped the selected points outside the sample: select them all again
    if (map.selection.length) map.plot.select(map.selection, { preventEvent: true });
  }

  // The whole layout in view: the plot fits [-1, 1] to the frame's height, so a frame taller than
  // wide (a phone) must step back to fit its width.
  function home(options = {}) {
    map.plot?.zoomToLocation([0, 0], Math.max(1, map.height / map.width), options);
  }

  function resize() {
    if (!map.plot) return;
    const { width, height } = $("map-frame").getBoundingClientRect();
    if (!width || !height || (width === map.width && height === map.height)) return;
    map.width = width;
    map.height = height;
    map.plot.set({ width, height });
    placeMarks();
  }

  // Layout coordinates -> pixels in the frame, through the camera (as regl-scatterplot's
  // getScreenPosition does for its points): the query is not one of them.
  function toScreen(x, y) {
    const nx = (x - map.norm.cx) / map.norm.half;
    const ny = (y - map.norm.cy) / map.norm.half;
    const m = map.plot.get("cameraView");
    const vx = m[0] * nx + m[4] * ny + m[12];
    const vy = m[1] * nx + m[5] * ny + m[13];
    return [(map.width * (vx / (map.width / map.height) + 1)) / 2, map.height * (0.5 - vy / 2)];
  }

  function renderLegend(summary, colours) {
    const legend = $("map-legend");
    legend.replaceChildren();
    summary.categories.forEach((name, c) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colours[c]; // CSSOM, not a style attribute: the CSP allows it
      const label = document.createElement("span");
      label.textContent = `${name} (${summary.counts[c].toLocaleString()})`;
      item.append(swatch, label);
      legend.append(item);
    });
  }

  async function hover(index) {
    map.hovered = index;
    const tip = $("map-tip");
    if (index < 0 || !map.ids || index >= map.ids.length) {
      tip.hidden = true;
      return;
    }
    const id = map.ids[index];
    const [sx, sy] = map.plot.getScreenPosition(index);
    tip.style.left = `${Math.min(sx + 12, map.width - 180)}px`;
    tip.style.top = `${Math.min(sy + 12, map.height - 170)}px`;
    const image = $("map-tip-image");
    if (image.dataset.id !== String(id)) {
      image.dataset.id = String(id);
      image.src = `/api/images/${id}.png?scale=4`;
      image.alt = `image ${id}`;
      $("map-tip-path").textContent = "";
      $("map-tip-meta").textContent = `id ${id} \u00b7 ${map.summary.categories[map.codes[index]]}`;
    }
    tip.hidden = false;
    tip.dataset.id = String(id);
    let record = map.records.get(id);
    if (!record) {
      const response = await fetch(`/api/map/points/${id}`);
      if (!response.ok) return;
      record = await response.json();
      map.records.set(id, record);
    }
    if (map.hovered !== index) return; // the pointer has moved on
    $("map-tip-path").textContent = record.path || record.label_name || "unlabelled";
    $("map-tip-meta").textContent =
      `id ${id} \u00b7 ${record.label_name || map.summary.categories[map.codes[index]]} \u00b7 ${record.split}`;
  }

  function setSelection(points) {
    map.selection = points;
    const n = points.length;
    $("map-selection").hidden = n === 0;
    $("map-selected").textContent = `${n.toLocaleString()} selected`;
    const tooMany = n > MAX_MARKS;
    $("map-more").disabled = $("map-less").disabled = !map.result || tooMany;
    $("map-limit").disabled = n > MAX_LIMIT_IDS;
    $("map-note").textContent = !map.result ? "search first to mark these more or less like it" :
      tooMany ? `mark at most ${MAX_MARKS.toLocaleString()} at once: lasso fewer` :
      n > MAX_LIMIT_IDS ? `limit searches to at most ${MAX_LIMIT_IDS.toLocaleString()}` : "";
    map.timings.selected = performance.now();
  }

  function selectedIds() {
    return map.selection.map((i) => map.ids[i]);
  }

  async function exportSelection(format) {
    const ids = selectedIds();
    const response = await fetch("/api/map/records", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ids }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("map-note").textContent = body.detail || `the server answered ${response.status}`;
      return;
    }
    const quote = (v) => (/[",\n\r]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
    const text = format === "json"
      ? JSON.stringify({ count: ids.length, records: body.records }, null, 1)
      : "id,path,class,split\n" +
        body.records.map((r) => [r.id, quote(r.path), quote(r.label_name ?? ""), r.split].join(",")).join("\n") + "\n";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: format === "json" ? "application/json" : "text/csv" }));
    link.download = `aesearch-selection-${ids.length}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  function setLimit(ids) {
    map.limited = ids;
    chip.hidden = !ids;
    chipText.textContent = ids ? `limited to ${ids.length.toLocaleString()} selected images ` : "";
    onLimit();
  }

  // The query (a ring with a cross), its hits (rings) and the marked images, over the points.
  function placeMarks() {
    const svg = $("map-marks");
    svg.replaceChildren();
    const placed = map.result?.map;
    if (!map.plot || !map.norm || !placed || placed.method !== map.method ||
        placed.generation !== map.summary.generation) return;
    const ns = "http://www.w3.org/2000/svg";
    const shape = (name, attributes) => {
      const element = document.createElementNS(ns, name);
      for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
      svg.append(element);
      return element;
    };
    const marks = new Map((map.result.marked || []).map((m) => [String(m.id), m.mark]));
    for (const [id, [x, y]] of Object.entries(placed.points)) {
      const [sx, sy] = toScreen(x, y);
      const mark = marks.get(id);
      shape("circle", { cx: sx, cy: sy, r: mark ? 8 : 6, class: mark ? `map-mark-${mark}` : "map-hit", "data-id": id });
    }
    const [qx, qy] = toScreen(...placed.query);
    const query = shape("g", { class: "map-query", transform: `translate(${qx} ${qy})` });
    for (const [name, attributes] of [
      ["circle", { r: 10 }], ["line", { x1: -15, x2: 15, y1: 0, y2: 0 }], ["line", { x1: 0, x2: 0, y1: -15, y2: 15 }],
    ]) {
      const element = document.createElementNS(ns, name);
      for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
      query.append(element);
    }
  }

  $("map-show").addEventListener("click", () => show());
  $("map-method").addEventListener("change", () => {
    if (!$("map-body").hidden) load($("map-method").value);
  });
  $("map-lasso").addEventListener("click", () => {
    const on = $("map-lasso").getAttribute("aria-pressed") !== "true";
    $("map-lasso").setAttribute("aria-pressed", String(on));
    map.plot?.set({ mouseMode: on ? "lasso" : "panZoom" });
  });
  $("map-reset").addEventListener("click", () => home({ transition: true }));
  $("map-more").addEventListener("click", () => onMarks(selectedIds(), "more"));
  $("map-less").addEventListener("click", () => onMarks(selectedIds(), "less"));
  $("map-limit").addEventListener("click", () => setLimit(selectedIds()));
  $("map-json").addEventListener("click", () => exportSelection("json"));
  $("map-csv").addEventListener("click", () => exportSelection("csv"));
  $("map-clear").addEventListener("click", () => map.plot?.deselect());
  chipClose.addEventListener("click", () => setLimit(null));

  const view = {
    /** Query parameters for a search: place the query on the map drawn. */
    params() {
      map.placing = Boolean(map.method); // app.js has one search in flight: this is the one answered next
      return map.method ? { map: map.method } : {};
    },
    /** The `where` filter for a search: the images searches are limited to, if any. */
    where: () => (map.limited ? `id in (${map.limited.join(", ")})` : ""),
    /** A search's answer (null: none): mark its query and hits, and enable more/less. */
    showResult(result) {
      map.result = result;
      if (map.drawn && map.placing && result && !result.map && !map.reloading) {
        // The collection has changed since this map was drawn (a sync): draw the new state's.
        map.reloading = true;
        load(map.method).finally(() => { map.reloading = false; });
      }
      placeMarks();
      setSelection(map.selection);
    },
  };
  window.aesearchMap = { map, toScreen, view, searchId: onSearchId }; // for the browser tests and the benchmark
  return view;
}
