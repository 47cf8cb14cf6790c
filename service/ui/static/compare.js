// N runs on one step axis and one scale per metric, each run's fired alerts marked in its colour,
// a summary row per run. URL: #/compare?run=a&run=b&metric=m&from=&to=
import { api, num } from "./api.js";
import { lineChart, pointsForGrid, setChartColumns } from "./charts.js";
import { el, fmt, PALETTE } from "./dom.js";
import { hashFor, replaceState } from "./main.js";
import { poll, POLL_MS } from "./poll.js";

const DEFAULT_METRICS = ["reward.mean", "entropy.mean", "log_ratio.std", "gate.saturated_frac", "kl.k3", "clip.token_frac"];

export async function comparePage(view, _arg, params) {
  let runIds = params.getAll("run");
  if (!runIds.length) {
    const page = await api("/runs", { limit: 4 });
    runIds = page.runs.map((r) => r.run_id);
    if (!runIds.length) { view.append(el("h1", {}, "Compare"), el("p", { class: "muted" }, "No runs yet.")); return null; }
  }
  const metrics = params.getAll("metric").length ? params.getAll("metric") : DEFAULT_METRICS;
  let zoom = params.get("from") !== null ? { lo: Number(params.get("from")), hi: Number(params.get("to")) } : null;
  const summary = el("table", { class: "runs", id: "compare-summary" });
  const grid = el("section", { class: "grid" });
  const info = el("span", { class: "muted", id: "zoom-info" });
  const picker = el("form", { class: "metric-picker" });
  view.append(el("h1", {}, `Compare ${runIds.length} runs`), summary,
    el("div", { class: "toolbar" }, info, el("button", { type: "button", id: "zoom-reset", onclick: () => setZoom(null) }, "Whole range")),
    grid, el("details", {}, el("summary", {}, "metrics"), picker));

  const onZoom = (lo, hi) => setZoom({ lo, hi });
  const onReset = () => setZoom(null);
  let charts = null;
  const maxPoints = pointsForGrid(grid); // a min and a max per pixel column of a chart
  view.dataset.maxPoints = String(maxPoints);
  const fetchAll = () => Promise.all([
    api("/compare", { run: runIds, metric: [...new Set([...metrics, "reward.mean", "log_ratio.std"])], max_points: maxPoints,
      ...(zoom ? { from_step: zoom.lo, to_step: zoom.hi } : {}) }),
    ...runIds.map((r) => api(`/runs/${encodeURIComponent(r)}/alert-bands`)),
  ]);
  // The first view's data is asked for together with the metric names (only the picker needs those).
  const first = fetchAll();
  first.catch(() => {});

  const names = await api(`/runs/${encodeURIComponent(runIds[0])}/metrics`);
  for (const m of names.metrics) {
    picker.append(el("label", {}, el("input", { type: "checkbox", name: m.name, checked: metrics.includes(m.name) }), m.name));
  }
  picker.addEventListener("change", () => {
    const p = new URLSearchParams();
    runIds.forEach((r) => p.append("run", r));
    for (const input of picker.querySelectorAll("input:checked")) p.append("metric", input.name);
    location.hash = hashFor("compare", null, p);
  });

  async function load(prefetched = null) {
    const [doc, ...bandDocs] = prefetched ? await prefetched : await fetchAll();
    const labels = doc.runs.map((r) => r.name || r.run_id);
    if (!charts) {
      charts = metrics.map((m) => lineChart(grid, { name: `compare:${m}`, title: m, labels }, { onZoom, onReset, syncKey: "compare" }));
    }
    // Fired alerts as thin marks in the run's colour, the band tinted by severity.
    const bands = bandDocs.flatMap((d, i) => d.bands.filter((b) => b.fired_step !== null).map((b) => ({
      ...b, label: labels[i], from_step: b.fired_step, to_step: b.fired_step,
      line: PALETTE[i % PALETTE.length], color: b.severity === "critical" ? "rgba(213,40,40,0.10)" : "rgba(230,159,0,0.10)",
    })));
    metrics.forEach((m, k) => {
      const md = doc.metrics[m];
      setChartColumns(charts[k], md.step, doc.runs.map((r) => md.values[r.run_id]), { bands, range: zoom });
    });
    renderSummary(doc, labels);
    const ds = doc.downsampling;
    info.textContent = (zoom ? `steps ${zoom.lo} to ${zoom.hi}` : "whole range") + (ds.bucket_steps ? ` (min/max per ${ds.bucket_steps} steps)` : " (every step)");
    view.dataset.loaded = String(Number(view.dataset.loaded || 0) + 1);
  }

  function renderSummary(doc, labels) {
    const s = (r, m, k) => (r.summary[m] ? num(r.summary[m][k]) : null);
    const ratioMetric = metrics.includes("ratio.std") ? "ratio.std" : "log_ratio.std";
    summary.replaceChildren(
      el("thead", {}, el("tr", {}, ...["run", "algorithm", "steps", "first warning", "first critical", "final reward", `max ${ratioMetric}`].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...doc.runs.map((r, i) => el("tr", { dataset: { run: r.run_id } },
        el("td", {}, el("span", { class: "swatch", dataset: { i: String(i % PALETTE.length) } }), el("a", { href: hashFor("run", r.run_id) }, labels[i])),
        el("td", {}, r.algorithm || ""),
        el("td", { class: "num" }, r.first_step === null ? "" : `${r.first_step} to ${r.last_step}`),
        el("td", { class: "num" }, r.first_warning_step ?? "none"),
        el("td", { class: "num" + (r.first_critical_step !== null ? " crit" : "") }, r.first_critical_step ?? "none"),
        el("td", { class: "num" }, fmt(s(r, "reward.mean", "last"))),
        el("td", { class: "num" }, fmt(s(r, ratioMetric, "worst")))))));
  }

  async function setZoom(z) {
    zoom = z;
    const p = new URLSearchParams();
    runIds.forEach((r) => p.append("run", r));
    metrics.forEach((m) => p.append("metric", m));
    if (zoom) { p.set("from", zoom.lo); p.set("to", zoom.hi); }
    replaceState("compare", null, p);
    await load();
  }

  await load(first);
  view.dataset.ready = "1";
  return poll(async () => { if (!zoom) await load(); }, POLL_MS * 2);
}
