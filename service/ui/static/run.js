// One run: header, a chart per stability family present in the run, the log-ratio heatmap, the
// alert timeline; drag on any chart zooms every chart (re-fetched at full resolution), live
// updates while the run is running. URL: #/run/<id>?from=&to=&add=metric,metric
import { api } from "./api.js";
import { lineChart, setChartData } from "./charts.js";
import { age, el } from "./dom.js";
import { FAMILIES } from "./families.js";
import { heatmap, setHeatmapData } from "./heatmap.js";
import { replaceState } from "./main.js";
import { poll, POLL_MS } from "./poll.js";

const MAX_POINTS = 1500;

export async function runPage(view, runId, params) {
  if (!runId) { view.append(el("p", { class: "error" }, "No run id in the URL.")); return null; }
  const [run, names] = await Promise.all([api(`/runs/${encodeURIComponent(runId)}`), api(`/runs/${encodeURIComponent(runId)}/metrics`)]);
  const have = new Set(names.metrics.map((m) => m.name));
  const describe = new Map(names.metrics.map((m) => [m.name, m.description]));
  let zoom = params.get("from") !== null ? { lo: Number(params.get("from")), hi: Number(params.get("to")) } : null;
  const added = (params.get("add") || "").split(",").filter((m) => m && have.has(m));

  const header = el("section", { class: "run-header" });
  const grid = el("section", { class: "grid" });
  const wide = el("section", { class: "wide" });
  const timeline = el("section", { class: "timeline" });
  const zoomInfo = el("span", { class: "muted", id: "zoom-info" });
  const reset = el("button", { type: "button", id: "zoom-reset", onclick: () => setZoom(null) }, "Whole run");
  const picker = el("select", { id: "add-metric" }, el("option", { value: "" }, "add a chart for any metric..."),
    ...names.metrics.map((m) => el("option", { value: m.name }, m.catalogue ? m.name : `${m.name} (custom)`)));
  view.append(header, el("div", { class: "toolbar" }, zoomInfo, reset, picker), wide, grid,
    el("h2", {}, "Alert timeline"), timeline);

  const specs = FAMILIES.map((f) => ({ ...f, metrics: f.metrics.filter((m) => have.has(m)) })).filter((f) => f.metrics.length);
  for (const m of added) specs.push({ name: `metric:${m}`, title: m, metrics: [m], custom: true });
  const onZoom = (lo, hi) => setZoom({ lo, hi });
  const onReset = () => setZoom(null);
  const charts = specs.map((s) => ({ spec: s, chart: lineChart(grid, { name: s.name, title: s.title, labels: s.metrics }, { onZoom, onReset }) }));
  for (const { spec, chart } of charts) chart.box.title = spec.metrics.map((m) => `${m}: ${describe.get(m) || ""}`).join("\n");
  const hm = have.size ? heatmap(wide, { title: "Log-ratio histogram over steps (share of tokens per bin, log colour)", onZoom, onReset }) : null;
  let bands = [];
  let last = run;

  function renderHeader(r) {
    const cfg = el("pre", { class: "config" }, JSON.stringify(r.config, null, 2));
    header.replaceChildren(
      el("h1", {}, r.name || r.run_id, " ", el("span", { class: `status status-${r.status}`, id: "run-status" }, r.status)),
      el("div", { class: "meta" },
        el("span", {}, `run ${r.run_id}`), el("span", {}, `project ${r.project}`), el("span", {}, `algorithm ${r.algorithm || "?"}`),
        el("span", { id: "run-steps" }, r.first_step === null ? "no steps yet" : `steps ${r.first_step} to ${r.last_step}`),
        el("span", {}, `seen ${age(r.last_seen_at)} ago`)),
      el("div", { class: "tags" }, ...Object.entries(r.tags).map(([k, v]) => el("span", { class: "tag" }, `${k}:${v}`))),
      el("details", {}, el("summary", {}, "config"), cfg));
  }

  function renderTimeline() {
    if (!bands.length) { timeline.replaceChildren(el("p", { class: "muted" }, "No alerts.")); return; }
    timeline.replaceChildren(el("table", { class: "alerts", id: "run-alerts" },
      el("thead", {}, el("tr", {}, ...["severity", "rule", "state", "from step", "fired", "to step", "description"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...bands.map((b) => el("tr", { dataset: { rule: b.rule } },
        el("td", {}, el("span", { class: `badge ${b.severity}` }, b.severity)),
        el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); const pad = 20; setZoom({ lo: Math.max(0, b.from_step - pad), hi: (b.to_step ?? last.last_step) + pad }); } }, b.rule)),
        el("td", {}, b.state), el("td", { class: "num" }, b.from_step), el("td", { class: "num" }, b.fired_step ?? ""),
        el("td", { class: "num" }, b.to_step ?? "open"), el("td", {}, b.description))))));
  }

  async function load() {
    const range = zoom ? { from_step: zoom.lo, to_step: zoom.hi } : {};
    const metrics = [...new Set(specs.flatMap((s) => s.metrics))];
    const t0 = performance.now();
    const [series, bandDoc, hmDoc] = await Promise.all([
      metrics.length ? api(`/runs/${encodeURIComponent(runId)}/series`, { metric: metrics, max_points: MAX_POINTS, ...range }) : null,
      api(`/runs/${encodeURIComponent(runId)}/alert-bands`),
      hm ? api(`/runs/${encodeURIComponent(runId)}/histogram/steps`, { max_buckets: 600, ...range }) : null,
    ]);
    const t1 = performance.now();
    bands = bandDoc.bands;
    for (const { spec, chart } of charts) {
      setChartData(chart, spec.metrics.map((m) => series.series[m]), { bands, lastStep: bandDoc.last_step });
    }
    if (hm && hmDoc) setHeatmapData(hm, hmDoc, { bands, lo: zoom ? zoom.lo : hmDoc.from_step, hi: zoom ? zoom.hi : hmDoc.to_step });
    if (zoom) for (const { chart } of charts) chart.u.setScale("x", { min: zoom.lo, max: zoom.hi });
    const ds = series && series.downsampling;
    zoomInfo.textContent = (zoom ? `steps ${zoom.lo} to ${zoom.hi}` : "whole run") +
      (ds && ds.bucket_steps ? ` (min/max per ${ds.bucket_steps} steps)` : " (every step)");
    reset.disabled = !zoom;
    renderTimeline();
    view.dataset.fetchMs = String(Math.round(t1 - t0));
    view.dataset.loaded = String(Number(view.dataset.loaded || 0) + 1);
  }

  async function setZoom(z) {
    zoom = z;
    const p = new URLSearchParams();
    if (zoom) { p.set("from", zoom.lo); p.set("to", zoom.hi); }
    if (added.length) p.set("add", added.join(","));
    replaceState("run", runId, p);
    await load();
  }

  picker.addEventListener("change", () => {
    const m = picker.value;
    if (!m || added.includes(m)) return;
    added.push(m);
    const p = new URLSearchParams(location.hash.split("?")[1] || "");
    p.set("add", added.join(","));
    location.hash = `#/run/${encodeURIComponent(runId)}?${p}`;
  });

  renderHeader(run);
  await load();
  view.dataset.ready = "1";
  return poll(async () => {
    const r = await api(`/runs/${encodeURIComponent(runId)}`);
    const changed = r.last_step !== last.last_step || r.status !== last.status;
    last = r;
    if (!changed) return;
    renderHeader(r);
    if (!zoom) await load();
  }, POLL_MS);
}
