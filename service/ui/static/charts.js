// Step-axis line charts on uPlot: alert bands drawn under the series, hover text for the bands,
// drag to zoom (the caller re-fetches that step range at full resolution), double-click to reset.
import { el, fmt, hideTip, PALETTE, SEVERITY_COLOR, SEVERITY_LINE, showTip } from "./dom.js";
import { num } from "./api.js";

// Charts on the page by name, for the zoom sync and for the browser tests to inspect.
export const registry = new Map();
let zoomLock = false;
window.sapoCharts = registry;

// Several series with their own steps (downsampled series keep the steps of each bucket's min and
// max) onto one sorted x axis; null where a series has no point. Non-finite values become gaps and
// are counted, so they can be marked. Each series' steps come sorted from the API, so the union is
// one typed-array sort and every series is placed with a walk along it (no Map, no Set).
export function align(seriesList) {
  let total = 0;
  for (const s of seriesList) total += s.step.length;
  let xs;
  if (seriesList.length === 1) xs = seriesList[0].step;
  else {
    const all = new Float64Array(total);
    let k = 0;
    for (const s of seriesList) { all.set(s.step, k); k += s.step.length; }
    all.sort();
    let n = 0;
    for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[n - 1]) all[n++] = all[i];
    xs = Array.from(all.subarray(0, n));
  }
  const nonfinite = [];
  const ys = seriesList.map((s) => {
    const y = new Array(xs.length).fill(null);
    let j = 0;
    for (let i = 0; i < s.step.length; i++) {
      const x = s.step[i];
      while (xs[j] < x) j++;
      if (xs[j] !== x) j = xs.indexOf(x); // unsorted input: still placed
      const v = num(s.value[i]);
      if (v === null) continue;
      if (Number.isFinite(v)) y[j] = v;
      else nonfinite.push({ step: x, value: v });
    }
    return y;
  });
  return { data: [xs, ...ys], nonfinite };
}

// Tick labels of one axis, as short as the tick spacing allows (0.0025, 1.5e-5, 2.5e+6), so the
// axis is as wide as its longest label (measured) and no label is cut off (k1 KL's small negatives).
export function tickLabels(vals) {
  const finite = vals.filter((v) => Number.isFinite(v));
  if (finite.length < 2) return vals.map(fmt);
  const incr = Math.abs(finite[1] - finite[0]) || Math.abs(finite[0]) || 1;
  const top = Math.max(...finite.map(Math.abs));
  // Decimals that write the tick spacing exactly (0.025 needs 3, not the 2 its magnitude suggests);
  // negative for spacings of 10, 100... (what the exponent form needs).
  let dec = -Math.floor(Math.log10(incr) + 1e-9);
  while (dec < 12 && Math.abs(incr * 10 ** dec - Math.round(incr * 10 ** dec)) > 1e-6 * incr * 10 ** dec) dec++;
  const str = (v) => (v === null || v === undefined ? "" : v === 0 ? "0" : null);
  if (top < 1e6 && dec <= 4) return vals.map((v) => str(v) ?? v.toFixed(Math.max(0, dec)));
  const digits = Math.max(0, Math.min(6, dec + Math.floor(Math.log10(top) + 1e-9)));
  return vals.map((v) => str(v) ?? v.toExponential(digits));
}

let measureCtx = null;
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // uPlot re-asks until the size settles
  if (!values || !values.length) return 40;
  measureCtx = measureCtx || document.createElement("canvas").getContext("2d");
  measureCtx.font = axis.font ? axis.font[0] : "12px system-ui, sans-serif";
  let w = 0;
  for (const v of values) if (v) w = Math.max(w, measureCtx.measureText(v).width);
  return Math.ceil(w / (window.devicePixelRatio || 1) + (axis.ticks.size || 10) + (axis.gap || 5) + 6);
}

// A chart plot's width, read once per container (every cell of a grid has the same width), so
// building 16 charts costs one layout, not 16.
const plotWidths = new WeakMap();
function plotWidth(container, plot) {
  let w = plotWidths.get(container);
  if (w === undefined) {
    w = Math.max(280, plot.clientWidth || 420);
    plotWidths.set(container, w);
  }
  return w;
}

// Points worth asking the API for, per series: a min and a max per pixel column of the plot area.
export function pointsFor(chart) {
  return Math.max(100, 2 * Math.round(chart.u.bbox.width / (window.devicePixelRatio || 1)));
}

// The same before any chart exists: from the width of a column of ``grid`` (its resolved tracks),
// less the chart's padding and a y axis.
export function pointsForGrid(grid) {
  const track = parseFloat(getComputedStyle(grid).gridTemplateColumns) || 440;
  return Math.max(100, 2 * Math.round(track - 14 - 50));
}

function bandsPlugin(chart) {
  return {
    hooks: {
      drawClear: [(u) => {
        const ctx = u.ctx;
        const { left, top, width, height } = u.bbox;
        const drawn = [];
        ctx.save();
        for (const b of chart.bands) {
          const to = b.to_step ?? chart.lastStep ?? b.from_step;
          let x0 = u.valToPos(b.from_step - 0.5, "x", true);
          let x1 = u.valToPos(to + 0.5, "x", true);
          if (x1 < left || x0 > left + width) continue;
          x0 = Math.max(x0, left);
          x1 = Math.min(Math.max(x1, x0 + 2 * devicePixelRatio), left + width);
          ctx.fillStyle = b.color || SEVERITY_COLOR[b.severity] || SEVERITY_COLOR.warning;
          ctx.fillRect(x0, top, x1 - x0, height);
          if (b.fired_step !== null && b.fired_step !== undefined) {
            const xf = u.valToPos(b.fired_step, "x", true);
            ctx.fillStyle = b.line || SEVERITY_LINE[b.severity] || SEVERITY_LINE.warning;
            if (xf >= left && xf <= left + width) ctx.fillRect(xf - devicePixelRatio, top, 2 * devicePixelRatio, height);
          }
          drawn.push({ rule: b.rule, from_step: b.from_step, x0: x0 / devicePixelRatio, x1: x1 / devicePixelRatio });
        }
        ctx.restore();
        chart.drawnBands = drawn;
      }],
      draw: [(u) => {
        // Non-finite values (NaN, +-Infinity) as red ticks along the top edge: never silently dropped.
        if (!chart.nonfinite.length) return;
        const ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = "#d52828";
        for (const p of chart.nonfinite) {
          const x = u.valToPos(p.step, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.fillRect(x - 2 * devicePixelRatio, u.bbox.top, 4 * devicePixelRatio, 6 * devicePixelRatio);
        }
        ctx.restore();
      }],
      setCursor: [(u) => {
        const { left, top } = u.cursor;
        if (left === undefined || left < 0 || !chart.bands.length) { hideTip(); return; }
        const step = u.posToVal(left, "x");
        const hits = chart.bands.filter((b) => step >= b.from_step - 0.5 && step <= (b.to_step ?? chart.lastStep ?? b.from_step) + 0.5);
        if (!hits.length) { hideTip(); return; }
        const r = u.over.getBoundingClientRect();
        const lines = [];
        for (const b of hits) {
          lines.push({ text: `${b.label ? b.label + ": " : ""}${b.rule} (${b.severity}, ${b.state})`, cls: `tip-${b.severity}` });
          lines.push({ text: `steps ${b.from_step} to ${b.to_step ?? "now"}${b.fired_step != null ? `, fired at ${b.fired_step}` : ""}` });
          if (b.description) lines.push({ text: b.description, cls: "muted" });
        }
        showTip(r.left + left, r.top + top, lines);
      }],
    },
  };
}

// A chart in ``container``: ``spec`` = {name, title, labels: [...], colors?}; ``onZoom(lo, hi)``
// is called with the step range the user dragged over, ``onReset()`` on double-click.
export function lineChart(container, spec, { onZoom, onReset, syncKey = "steps" } = {}) {
  const box = el("div", { class: "chart", dataset: { chart: spec.name } });
  const title = el("div", { class: "chart-title" }, spec.title);
  const plot = el("div", { class: "chart-plot" });
  box.append(title, plot);
  container.append(box);
  const chart = { name: spec.name, box, bands: [], nonfinite: [], lastStep: null, drawnBands: [], u: null, points: 0 };
  const width = plotWidth(container, plot);
  const opts = {
    width,
    height: spec.height || 190,
    // Whole-pixel lines of width 1: chromium's software rasterizer fills these ~3x faster than
    // anti-aliased 1.25 px strokes, and 16 charts of ~1,000-point min/max zigzags are most of a load.
    pxAlign: 1,
    scales: { x: { time: false } },
    axes: [{ size: 28, values: (u, vals) => vals.map(fmt) }, { size: axisSize, values: (u, vals) => tickLabels(vals) }],
    legend: { live: true },
    cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: syncKey } },
    series: [
      { label: "step", value: (u, v) => (v === null || v === undefined ? "" : String(Math.round(v))) },
      ...spec.labels.map((label, i) => ({
        label,
        stroke: (spec.colors || PALETTE)[i % PALETTE.length],
        width: 1,
        spanGaps: true,
        points: { show: false },
        value: (u, v) => fmt(v),
      })),
    ],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 3) return;
        const lo = Math.max(0, Math.floor(u.posToVal(u.select.left, "x")));
        const hi = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        // Charts sharing a sync key all report the same selection in one go: zoom once.
        if (!onZoom || hi <= lo || zoomLock) return;
        zoomLock = true;
        setTimeout(() => { zoomLock = false; }, 0);
        onZoom(lo, hi);
      }],
    },
    plugins: [bandsPlugin(chart)],
  };
  chart.u = new uPlot(opts, [[], ...spec.labels.map(() => [])], plot);
  chart.u.over.addEventListener("dblclick", () => onReset && onReset());
  chart.u.over.addEventListener("mouseleave", hideTip);
  registry.set(spec.name, chart);
  return chart;
}

// New data for a chart: ``seriesList`` in the order of ``spec.labels``; ``bands`` alert bands.
export function setChartData(chart, seriesList, opts = {}) {
  const { data, nonfinite } = align(seriesList);
  draw(chart, data, nonfinite, seriesList.reduce((n, s) => n + s.step.length, 0), opts);
}

// New data already on one step grid (``/compare``): ``xs`` the steps, ``columns`` one array of wire
// values per series (null where the series has no point).
export function setChartColumns(chart, xs, columns, opts = {}) {
  const nonfinite = [];
  let points = 0;
  const ys = columns.map((col) => col.map((w, i) => {
    const v = num(w);
    if (v === null) return null;
    points++;
    if (Number.isFinite(v)) return v;
    nonfinite.push({ step: xs[i], value: v });
    return null;
  }));
  draw(chart, [xs, ...ys], nonfinite, points, opts);
}

function draw(chart, data, nonfinite, points, { bands, lastStep, range } = {}) {
  chart.nonfinite = nonfinite;
  if (bands) chart.bands = bands;
  if (lastStep !== undefined) chart.lastStep = lastStep;
  chart.points = points;
  chart.box.dataset.points = String(points);
  chart.box.dataset.nonfinite = String(nonfinite.length);
  chart.box.classList.toggle("empty", points === 0);
  // One redraw: the zoomed range is set in the same batch as the data (uPlot commits once).
  chart.u.batch(() => {
    chart.u.setData(data, !range);
    if (range) chart.u.setScale("x", { min: range.lo, max: range.hi });
  });
  chart.box.dataset.ready = "1";
}

export function resizeAll() {
  for (const c of registry.values()) {
    const plot = c.box.querySelector(".chart-plot");
    if (plot && plot.clientWidth && Math.abs(plot.clientWidth - c.u.width) > 8) c.u.setSize({ width: plot.clientWidth, height: c.u.height });
  }
}
window.addEventListener("resize", resizeAll);

export function clearCharts() {
  for (const c of registry.values()) c.u.destroy();
  registry.clear();
  hideTip();
}
