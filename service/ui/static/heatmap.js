// The log-ratio histogram over steps as a heatmap on a plain canvas: x = step buckets, y = the 42
// bins (log-ratio edges), colour = the bucket's share of tokens in the bin (log scale), with the
// run's alert bands along the top.
import { el, fmt, hideTip, SEVERITY_LINE, showTip } from "./dom.js";
import { num } from "./api.js";

const PAD = { left: 64, right: 12, top: 10, bottom: 26 };
// viridis, 9 stops
const STOPS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
  [92, 200, 99], [170, 220, 50], [253, 231, 37]];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}
// The colour scale in 256 steps, looked up per cell.
const LUT = Array.from({ length: 256 }, (_, i) => colour(i / 255));

export function heatmap(container, { name = "heatmap", title, onZoom, onReset } = {}) {
  const canvas = el("canvas", { class: "heatmap-canvas" });
  const box = el("div", { class: "chart chart-wide", dataset: { chart: name } }, el("div", { class: "chart-title" }, title), canvas);
  container.append(box);
  const hm = { name, box, canvas, doc: null, bands: [], points: 0, range: null };
  let drag = null;
  const stepAt = (px) => {
    const r = hm.range;
    if (!r) return null;
    const w = canvas.clientWidth - PAD.left - PAD.right;
    return r.lo + ((px - PAD.left) / w) * (r.hi - r.lo + 1);
  };
  canvas.addEventListener("mousedown", (e) => { drag = e.offsetX; });
  canvas.addEventListener("mouseup", (e) => {
    if (drag !== null && Math.abs(e.offsetX - drag) > 3 && onZoom) {
      const a = stepAt(Math.min(drag, e.offsetX)), b = stepAt(Math.max(drag, e.offsetX));
      onZoom(Math.max(0, Math.floor(a)), Math.ceil(b));
    }
    drag = null;
  });
  canvas.addEventListener("dblclick", () => onReset && onReset());
  canvas.addEventListener("mouseleave", hideTip);
  canvas.addEventListener("mousemove", (e) => {
    const d = hm.doc;
    const s = stepAt(e.offsetX);
    if (!d || s === null || e.offsetY < PAD.top || e.offsetY > canvas.clientHeight - PAD.bottom) { hideTip(); return; }
    const i = d.start.findIndex((a, k) => s >= a && s <= d.end[k] + 1);
    if (i < 0) { hideTip(); return; }
    const h = canvas.clientHeight - PAD.top - PAD.bottom;
    const bin = Math.min(41, Math.max(0, Math.floor(((canvas.clientHeight - PAD.bottom - e.offsetY) / h) * 42)));
    const total = d.counts[i].reduce((a, b) => a + b, 0) || 1;
    const lines = [
      { text: `steps ${d.start[i]} to ${d.end[i]} (${d.steps[i]} with a histogram)` },
      { text: `log-ratio in [${fmt(num(d.edges[bin]))}, ${fmt(num(d.edges[bin + 1]))}): ${d.counts[i][bin]} tokens (${fmt((100 * d.counts[i][bin]) / total)} %)` },
    ];
    for (const b of hm.bands) if (s >= b.from_step && s <= (b.to_step ?? hm.range.hi) + 1) lines.push({ text: `${b.rule} (${b.severity})`, cls: `tip-${b.severity}` });
    const r = canvas.getBoundingClientRect();
    showTip(r.left + e.offsetX, r.top + e.offsetY, lines);
  });
  hm.draw = () => draw(hm);
  return hm;
}

export function setHeatmapData(hm, doc, { bands, lo, hi } = {}) {
  hm.doc = doc;
  if (bands) hm.bands = bands;
  hm.range = { lo: lo ?? doc.from_step ?? 0, hi: hi ?? doc.to_step ?? 0 };
  hm.points = doc.start.length;
  hm.box.dataset.points = String(hm.points);
  hm.box.classList.toggle("empty", hm.points === 0);
  draw(hm);
  hm.box.dataset.ready = "1";
}

function draw(hm) {
  const c = hm.canvas;
  const dpr = window.devicePixelRatio || 1;
  const cssW = Math.max(300, c.clientWidth || 800), cssH = 230;
  c.width = Math.round(cssW * dpr);
  c.height = Math.round(cssH * dpr);
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const d = hm.doc, r = hm.range;
  if (!d || !r) return;
  const w = cssW - PAD.left - PAD.right, h = cssH - PAD.top - PAD.bottom;
  const span = r.hi - r.lo + 1;
  const xOf = (s) => PAD.left + ((s - r.lo) / span) * w;
  const bh = h / 42;
  // The cells as pixels: one image column per device pixel of the plot, one row per bin, scaled up
  // onto the plot in one drawImage (25,000 fillRects with their own fillStyle took ~180 ms).
  const cols = Math.max(1, Math.round(w * dpr));
  const img = new ImageData(cols, 42);
  const px = img.data;
  for (let i = 0; i < d.start.length; i++) {
    const counts = d.counts[i];
    let total = 0;
    for (let b = 0; b < 42; b++) total += counts[b];
    if (!total) continue;
    const c0 = Math.max(0, Math.floor(((d.start[i] - r.lo) / span) * cols));
    const c1 = Math.min(cols, Math.max(c0 + 1, Math.floor(((d.end[i] + 1 - r.lo) / span) * cols)));
    for (let b = 0; b < 42; b++) {
      if (!counts[b]) continue;
      const t = 1 + Math.log10(counts[b] / total) / 5; // 1e-5 .. 1 of the bucket's tokens
      const [R, G, B] = LUT[Math.round(Math.min(1, Math.max(0, t)) * 255)];
      let o = ((41 - b) * cols + c0) * 4;
      for (let x = c0; x < c1; x++, o += 4) { px[o] = R; px[o + 1] = G; px[o + 2] = B; px[o + 3] = 255; }
    }
  }
  const cells = document.createElement("canvas");
  cells.width = cols;
  cells.height = 42;
  cells.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(cells, PAD.left, PAD.top, w, h);
  for (const b of hm.bands) {
    const x0 = Math.max(PAD.left, xOf(b.from_step)), x1 = Math.min(PAD.left + w, Math.max(xOf((b.to_step ?? r.hi) + 1), x0 + 2));
    if (x1 <= x0) continue;
    ctx.fillStyle = SEVERITY_LINE[b.severity] || SEVERITY_LINE.warning;
    ctx.fillRect(x0, PAD.top - 6, x1 - x0, 5);
  }
  ctx.fillStyle = "#444";
  ctx.font = "11px sans-serif";
  ctx.textAlign = "right";
  for (const b of [0, 7, 14, 21, 28, 35, 42]) {
    const e = num(d.edges[b]);
    ctx.fillText(Number.isFinite(e) ? fmt(e) : (e > 0 ? "+inf" : "-inf"), PAD.left - 6, PAD.top + h - b * bh + 4);
  }
  ctx.textAlign = "center";
  for (let k = 0; k <= 5; k++) {
    const s = r.lo + Math.round((k / 5) * (span - 1));
    ctx.fillText(String(s), xOf(s + 0.5), cssH - 8);
  }
  ctx.strokeStyle = "#bbb";
  ctx.strokeRect(PAD.left, PAD.top, w, h);
}
