// The sketch canvas: draw with a mouse, a finger or a pen (pointer events), search as you draw.
// Strokes are kept as points so undo and a change of ink polarity redraw them exactly. The canvas
// is sent as a PNG and framed by the bundle's contract, as every uploaded image: Fashion-MNIST's
// silhouettes (trim, fit to 28x28, a light background negated: either polarity works) or a colour
// collection's photos (kept as drawn: the ink the images have, dark on white for clip art and icons).
// So the default ink follows the bundle's framing (useFraming), and a choice is kept per framing.

const DEBOUNCE_MS = 60; // searches while drawing: at most one per this many ms, plus one at the end
const COLOURS = {
  "light-on-dark": { ink: "#ffffff", paper: "#000000" },
  "dark-on-light": { ink: "#000000", paper: "#ffffff" },
};

export function setUpSketch({ onSketch, onClear }) {
  const canvas = document.getElementById("canvas");
  const context = canvas.getContext("2d");
  const brush = document.getElementById("brush");
  const polarity = document.getElementById("polarity");
  const strokes = [];
  let current = null; // the stroke being drawn, with its pointer id
  let timer = null;

  let remembered = "aesearch-polarity"; // the silhouette framing's (the key of earlier versions)
  const saved = localStorage.getItem(remembered);
  if (saved && COLOURS[saved]) polarity.value = saved;

  function colours() {
    return COLOURS[polarity.value] || COLOURS["light-on-dark"];
  }

  function segment(stroke, from, to) {
    context.strokeStyle = colours().ink;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = stroke.size * to.weight;
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
  }

  function redraw() {
    context.fillStyle = colours().paper;
    context.fillRect(0, 0, canvas.width, canvas.height);
    for (const stroke of strokes) {
      stroke.points.forEach((point, n) => segment(stroke, stroke.points[Math.max(0, n - 1)], point));
    }
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    // A pen's pressure thickens the line; mouse and touch report a constant 0.5 or 0 and draw at brush size.
    const weight = event.pointerType === "pen" && event.pressure > 0 ? 0.5 + event.pressure : 1;
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
      weight,
    };
  }

  function send() {
    clearTimeout(timer);
    timer = null;
    if (!strokes.length) return;
    canvas.toBlob((blob) => blob && onSketch(blob), "image/png");
  }

  function schedule() {
    if (timer === null) timer = setTimeout(send, DEBOUNCE_MS);
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (current || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    current = { id: event.pointerId, size: Number(brush.value), points: [point(event)] };
    strokes.push(current);
    segment(current, current.points[0], current.points[0]);
    schedule();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current || event.pointerId !== current.id) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of events.length ? events : [event]) {
      const next = point(e);
      segment(current, current.points[current.points.length - 1], next);
      current.points.push(next);
    }
    schedule();
  });
  const finish = (event) => {
    if (!current || event.pointerId !== current.id) return;
    current = null;
    send();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  document.getElementById("undo").addEventListener("click", () => {
    strokes.pop();
    redraw();
    if (strokes.length) send();
    else onClear();
  });
  document.getElementById("clear").addEventListener("click", () => {
    strokes.length = 0;
    redraw();
    onClear();
  });
  polarity.addEventListener("change", () => {
    localStorage.setItem(remembered, polarity.value);
    redraw();
    send();
  });
  redraw();
  return {
    // The bundle's framing ("silhouette" or "photo"): the ink chosen for it before, else its default.
    useFraming(framing) {
      const photo = framing === "photo";
      remembered = photo ? "aesearch-polarity-photo" : "aesearch-polarity";
      const choice = localStorage.getItem(remembered);
      polarity.value = COLOURS[choice] ? choice : photo ? "dark-on-light" : "light-on-dark";
      redraw();
    },
  };
}
