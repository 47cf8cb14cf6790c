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
// are counted, so they can be marked.
export function align(seriesList) {
  const steps = new Set();
  for (const s of seriesList) for (const x of s.step) steps.add(x);
  const xs = Float64Array.from(steps).sort();
  const index = new Map();
  xs.forEach((x, i) => index.set(x, i));
  const nonfinite = [];
  const ys = seriesList.map((s) => {
    const y = new Array(xs.length).fill(null);
    s.step.forEach((x, i) => {
      const v = num(s.value[i]);
      if (v === null) return;
      if (Number.isFinite(v)) y[index.get(x)] = v;
      else nonfinite.push({ step: x, value: v });
    });
    return y;
  });
  return { data: [Array.from(xs), ...ys], nonfinite };
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
  const width = Math.max(280, plot.clientWidth || 420);
  const opts = {
    width,
    height: spec.height || 190,
    pxAlign: 0,
    scales: { x: { time: false } },
    axes: [{ size: 28, values: (u, vals) => vals.map(fmt) }, { size: 64, values: (u, vals) => vals.map(fmt) }],
    legend: { live: true },
    cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: syncKey } },
    series: [
      { label: "step", value: (u, v) => (v === null || v === undefined ? "" : String(Math.round(v))) },
      ...spec.labels.map((label, i) => ({
        label,
        stroke: (spec.colors || PALETTE)[i % PALETTE.length],
        width: 1.25,
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
export function setChartData(chart, seriesList, { bands, lastStep } = {}) {
  const { data, nonfinite } = align(seriesList);
  chart.nonfinite = nonfinite;
  if (bands) chart.bands = bands;
  if (lastStep !== undefined) chart.lastStep = lastStep;
  chart.points = seriesList.reduce((n, s) => n + s.step.length, 0);
  chart.box.dataset.points = String(chart.points);
  chart.box.dataset.nonfinite = String(nonfinite.length);
  chart.box.classList.toggle("empty", chart.points === 0);
  chart.u.setData(data, true);
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
