// One run: header, a chart per stability family present in the run, the log-ratio heatmap, the
// alert timeline; drag on any chart zooms every chart (re-fetched at full resolution), live
// updates while the run is running. URL: #/run/<id>?from=&to=&add=metric,metric
import { api } from "./api.js";
import { lineChart, pointsForGrid, setChartData } from "./charts.js";
import { age, el } from "./dom.js";
import { FAMILIES } from "./families.js";
import { heatmap, setHeatmapData } from "./heatmap.js";
import { replaceState } from "./main.js";
import { poll, POLL_MS } from "./poll.js";

const ALL_FAMILY_METRICS = [...new Set(FAMILIES.flatMap((f) => f.metrics))];
const METRIC_NAME = /^[a-z0-9_.]{1,200}$/;

export async function runPage(view, runId, params) {
  if (!runId) { view.append(el("p", { class: "error" }, "No run id in the URL.")); return null; }
  const path = `/runs/${encodeURIComponent(runId)}`;
  let zoom = params.get("from") !== null ? { lo: Number(params.get("from")), hi: Number(params.get("to")) } : null;
  const asked = (params.get("add") || "").split(",").filter((m) => METRIC_NAME.test(m));

  const header = el("section", { class: "run-header" });
  const grid = el("section", { class: "grid" });
  const wide = el("section", { class: "wide" });
  const timeline = el("section", { class: "timeline" });
  const zoomInfo = el("span", { class: "muted", id: "zoom-info" });
  const reset = el("button", { type: "button", id: "zoom-reset", onclick: () => setZoom(null) }, "Whole run");
  const picker = el("select", { id: "add-metric" }, el("option", { value: "" }, "add a chart for any metric..."));
  view.append(header, el("div", { class: "toolbar" }, zoomInfo, reset, picker), wide, grid,
    el("h2", {}, "Alert timeline"), timeline);

  // A min and a max per pixel column of the plots (all charts are as wide), so no point is fetched,
  // parsed and drawn that the eye cannot see; a one-step spike is kept by the min/max downsampling.
  const maxPoints = pointsForGrid(grid);
  view.dataset.maxPoints = String(maxPoints);
  // A zoom into at most this many steps shows every step (beyond, min/max per pixel column).
  const FULL_RESOLUTION = 2000;
  const rangeOf = (z) => (z ? { from_step: z.lo, to_step: z.hi } : {});
  const seriesParams = (metrics, z) => ({
    metric: metrics, max_points: z && z.hi - z.lo < FULL_RESOLUTION ? FULL_RESOLUTION : maxPoints, ...rangeOf(z) });
  // Everything the first view needs is asked for at once: the series of every chart this page can
  // show (a metric the run lacks comes back empty) go out with the run and its metric names instead
  // of after them. A failure here only means the first load asks again.
  const first = Promise.all([
    api(`${path}/series`, seriesParams([...new Set([...ALL_FAMILY_METRICS, ...asked])], zoom)),
    api(`${path}/alert-bands`),
    api(`${path}/histogram/steps`, { max_buckets: 600, ...rangeOf(zoom) }),
  ]);
  first.catch(() => {});
  const [run, names] = await Promise.all([api(path), api(`${path}/metrics`)]);
  const have = new Set(names.metrics.map((m) => m.name));
  const describe = new Map(names.metrics.map((m) => [m.name, m.description]));
  const added = asked.filter((m) => have.has(m));
  picker.append(...names.metrics.map((m) => el("option", { value: m.name }, m.catalogue ? m.name : `${m.name} (custom)`)));

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

  let bandDoc = null;

  // ``withBands``: the alert bands too (the first load and live updates; a zoom keeps them).
  // ``prefetched``: the first load's answers, asked for above.
  async function load(withBands = true, prefetched = null) {
    const metrics = [...new Set(specs.flatMap((s) => s.metrics))];
    const t0 = performance.now();
    const [series, newBands, hmDoc] = prefetched || await Promise.all([
      metrics.length ? api(`${path}/series`, seriesParams(metrics, zoom)) : null,
      withBands || !bandDoc ? api(`${path}/alert-bands`) : bandDoc,
      hm ? api(`${path}/histogram/steps`, { max_buckets: 600, ...rangeOf(zoom) }) : null,
    ]);
    const t1 = performance.now();
    bandDoc = newBands;
    bands = bandDoc.bands;
    for (const { spec, chart } of charts) {
      setChartData(chart, spec.metrics.map((m) => series.series[m]), { bands, lastStep: bandDoc.last_step, range: zoom });
    }
    if (hm && hmDoc) setHeatmapData(hm, hmDoc, { bands, lo: zoom ? zoom.lo : hmDoc.from_step, hi: zoom ? zoom.hi : hmDoc.to_step });
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
    await load(false);
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
  await load(true, await first.catch(() => null));
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
