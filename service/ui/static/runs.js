// The runs table: filters (sent to the API, plus free text here), sort, select several, Compare.
import { api } from "./api.js";
import { age, el } from "./dom.js";
import { hashFor, replaceState } from "./main.js";
import { poll, POLL_MS } from "./poll.js";

const COLUMNS = [
  ["project", "project"], ["name", "name"], ["algorithm", "algorithm"], ["status", "status"],
  ["steps", "steps"], ["last_step", "last step"], ["last_seen_at", "age"], ["alerts", "firing alerts"], ["tags", "tags"],
];

export async function runsPage(view, _arg, params) {
  const selected = new Set(params.getAll("sel"));
  const form = el("form", { class: "filters" });
  const field = (name, placeholder) => el("input", { name, placeholder, value: params.get(name) || "" });
  const status = el("select", { name: "status" }, ...["", "running", "finished", "failed"].map((s) =>
    el("option", { value: s, selected: (params.get("status") || "") === s }, s || "any status")));
  const compareBtn = el("button", { type: "button", class: "primary", id: "compare-selected" }, "Compare selected");
  form.append(field("project", "project"), field("algorithm", "algorithm"), status, field("tag", "tag key:value"),
    field("q", "search name / id / tags"), compareBtn);
  const table = el("table", { class: "runs", id: "runs-table" });
  const count = el("p", { class: "muted" });
  view.append(el("h1", {}, "Runs"), form, count, table);
  let sort = params.get("sort") || "last_seen_at", desc = params.get("dir") !== "asc";
  let runs = [], firing = new Map();

  const state = () => {
    const p = new URLSearchParams();
    for (const k of ["project", "algorithm", "tag", "q"]) if (form.elements[k].value) p.set(k, form.elements[k].value);
    if (status.value) p.set("status", status.value);
    if (sort !== "last_seen_at" || !desc) { p.set("sort", sort); p.set("dir", desc ? "desc" : "asc"); }
    return p;
  };

  async function load() {
    const f = form.elements;
    const [page, alerts] = await Promise.all([
      api("/runs", { project: f.project.value, algorithm: f.algorithm.value, status: status.value, tag: f.tag.value ? [f.tag.value] : [], limit: 500 }),
      api("/alerts", { state: "firing", project: f.project.value, limit: 1000 }),
    ]);
    runs = page.runs;
    firing = new Map();
    for (const a of alerts) {
      const m = firing.get(a.run_id) || { warning: 0, critical: 0 };
      m[a.severity] += 1;
      firing.set(a.run_id, m);
    }
    render(page.total);
  }

  function value(r, key) {
    if (key === "steps") return r.first_step === null ? 0 : r.last_step - r.first_step + 1;
    if (key === "alerts") { const m = firing.get(r.run_id); return m ? m.critical * 1000 + m.warning : 0; }
    if (key === "tags") return Object.entries(r.tags).map(([k, v]) => `${k}:${v}`).join(" ");
    if (key === "name") return r.name || r.run_id;
    return r[key] ?? "";
  }

  function render(total) {
    const q = form.elements.q.value.trim().toLowerCase();
    let rows = runs.filter((r) => !q || [r.run_id, r.name || "", value(r, "tags"), r.project].some((s) => s.toLowerCase().includes(q)));
    rows = rows.slice().sort((a, b) => {
      const x = value(a, sort), y = value(b, sort);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
    count.textContent = `${rows.length} of ${total} runs`;
    const head = el("tr", {}, el("th", {}, ""), ...COLUMNS.map(([key, label]) => el("th", {
      class: "sortable" + (key === sort ? (desc ? " desc" : " asc") : ""),
      onclick: () => { desc = key === sort ? !desc : true; sort = key; replaceState("runs", null, state()); render(total); },
    }, label)));
    const body = rows.map((r) => {
      const m = firing.get(r.run_id);
      const box = el("input", { type: "checkbox", checked: selected.has(r.run_id), "aria-label": `select ${r.run_id}`,
        onchange: (e) => { e.target.checked ? selected.add(r.run_id) : selected.delete(r.run_id); } });
      return el("tr", { dataset: { run: r.run_id } },
        el("td", {}, box),
        el("td", {}, r.project),
        el("td", {}, el("a", { href: hashFor("run", r.run_id), class: "run-link" }, r.name || r.run_id),
          r.name && r.name !== r.run_id ? el("div", { class: "muted small" }, r.run_id) : null),
        el("td", {}, r.algorithm || ""),
        el("td", {}, el("span", { class: `status status-${r.status}` }, r.status)),
        el("td", { class: "num" }, String(value(r, "steps"))),
        el("td", { class: "num" }, r.last_step ?? ""),
        el("td", { class: "num" }, age(r.last_seen_at)),
        el("td", {}, m && m.critical ? el("span", { class: "badge critical" }, `${m.critical} critical`) : null,
          m && m.warning ? el("span", { class: "badge warning" }, `${m.warning} warning`) : null),
        el("td", {}, ...Object.entries(r.tags).map(([k, v]) => el("span", { class: "tag" }, `${k}:${v}`))));
    });
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); replaceState("runs", null, state()); load(); });
  form.addEventListener("change", (e) => { if (e.target.type !== "checkbox") { replaceState("runs", null, state()); load(); } });
  form.elements.q.addEventListener("input", () => { replaceState("runs", null, state()); render(runs.length); });
  compareBtn.addEventListener("click", () => {
    const p = new URLSearchParams();
    for (const r of selected) p.append("run", r);
    location.hash = hashFor("compare", null, p);
  });
  await load();
  return poll(load, POLL_MS * 2);
}
