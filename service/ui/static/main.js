// Hash routing: #/runs, #/run/<id>, #/compare, #/alerts, each with its state in the query part, so
// every view is a shareable URL.
import { clearCharts } from "./charts.js";
import { el } from "./dom.js";
import { runsPage } from "./runs.js";
import { runPage } from "./run.js";
import { comparePage } from "./compare.js";
import { alertsPage } from "./alerts.js";

let stop = null;

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "runs", arg: parts[1] || null, params: new URLSearchParams(query) };
}

export function hashFor(page, arg, params) {
  const q = params && [...params].length ? "?" + params.toString() : "";
  return `#/${page}${arg ? "/" + encodeURIComponent(arg) : ""}${q}`;
}

// Change the URL without re-rendering (the view already shows that state).
export function replaceState(page, arg, params) {
  history.replaceState(null, "", hashFor(page, arg, params));
}

async function route() {
  if (stop) stop();
  stop = null;
  clearCharts();
  const { page, arg, params } = parseHash();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === page);
  const view = document.getElementById("view");
  view.replaceChildren();
  for (const k of Object.keys(view.dataset)) delete view.dataset[k];
  const pages = { runs: runsPage, run: runPage, compare: comparePage, alerts: alertsPage };
  const fn = pages[page];
  if (!fn) { view.append(el("p", { class: "error" }, `No page ${page}.`)); return; }
  try {
    stop = await fn(view, arg, params);
    view.dataset.ready = "1";
  } catch (e) {
    view.append(el("p", { class: "error" }, String(e.message || e)));
  }
}

window.addEventListener("hashchange", route);
route();
