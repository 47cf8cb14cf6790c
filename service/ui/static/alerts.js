// Alerts across runs: firing / pending / resolved, with rule, severity, run, steps, values and the
// rule's description; each links to the run page zoomed around its steps. URL: #/alerts?state=&project=&run=
import { api } from "./api.js";
import { age, el, fmt } from "./dom.js";
import { hashFor, replaceState } from "./main.js";
import { poll, POLL_MS } from "./poll.js";

export async function alertsPage(view, _arg, params) {
  const form = el("form", { class: "filters" });
  const state = el("select", { name: "state" }, ...["", "firing", "pending", "resolved"].map((s) =>
    el("option", { value: s, selected: (params.get("state") || "") === s }, s || "any state")));
  form.append(state, el("input", { name: "project", placeholder: "project", value: params.get("project") || "" }),
    el("input", { name: "run", placeholder: "run id", value: params.get("run") || "" }), el("button", { type: "submit" }, "Filter"));
  const table = el("table", { class: "alerts", id: "alerts-table" });
  const count = el("p", { class: "muted" });
  view.append(el("h1", {}, "Alerts"), form, count, table);
  const rules = new Map((await api("/rules")).map((r) => [r.id, r.description]));

  async function load() {
    const f = form.elements;
    const alerts = await api("/alerts", { state: state.value, project: f.project.value, run: f.run.value, limit: 1000 });
    count.textContent = `${alerts.length} alerts`;
    table.replaceChildren(
      el("thead", {}, el("tr", {}, ...["state", "severity", "rule", "run", "from step", "fired", "resolved", "values", "since", "description"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...alerts.map((a) => {
        const to = a.resolved_step ?? a.fired_step ?? a.started_step;
        const p = new URLSearchParams({ from: Math.max(0, a.started_step - 20), to: to + 20 });
        return el("tr", { dataset: { alert: a.id } },
          el("td", {}, el("span", { class: `state state-${a.state}` }, a.state)),
          el("td", {}, el("span", { class: `badge ${a.severity}` }, a.severity)),
          el("td", {}, a.rule),
          el("td", {}, el("a", { href: hashFor("run", a.run_id, p) }, a.run_id), el("div", { class: "muted small" }, a.project)),
          el("td", { class: "num" }, a.started_step), el("td", { class: "num" }, a.fired_step ?? ""),
          el("td", { class: "num" }, a.resolved_step ?? ""),
          el("td", { class: "values" }, Object.entries(a.values).map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v) : typeof v === "string" ? v : JSON.stringify(v)}`).join(", ")),
          el("td", { class: "num" }, age(a.fired_at || a.started_at)),
          el("td", {}, rules.get(a.rule) || ""));
      })));
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["state", "project", "run"]) if (form.elements[k].value) p.set(k, form.elements[k].value);
    replaceState("alerts", null, p);
    load();
  });
  state.addEventListener("change", () => form.requestSubmit());
  await load();
  view.dataset.ready = "1";
  return poll(load, POLL_MS * 2);
}
