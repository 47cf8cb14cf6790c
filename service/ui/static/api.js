// The public REST API, with the read token from session storage as a Bearer header (never a cookie).
const KEY = "sapo-monitor.token";
let asking = null;

export class ApiError extends Error {
  constructor(status, detail) {
    super(`HTTP ${status}: ${detail}`);
    this.status = status;
  }
}

function askToken(why) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-why").textContent = why;
  asking = new Promise((resolve) => {
    form.addEventListener("submit", () => {
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      asking = null;
      resolve();
    }, { once: true });
  });
  if (!dialog.open) dialog.showModal();
  return asking;
}

function detailText(doc) {
  const d = doc && doc.detail;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return typeof d === "string" ? d : JSON.stringify(doc);
}

export async function api(path, params = {}) {
  const url = new URL("/api/v1" + path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else url.searchParams.set(k, v);
  }
  for (;;) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(url, { headers, credentials: "omit", cache: "no-store" });
    if (r.status === 401) {
      const doc = await r.json().catch(() => ({}));
      sessionStorage.removeItem(KEY);
      await askToken(token ? `The token was refused (${detailText(doc)}).` : "This service needs a bearer token with the read role.");
      continue;
    }
    if (!r.ok) throw new ApiError(r.status, detailText(await r.json().catch(() => ({}))));
    return r.json();
  }
}

// Wire values: non-finite floats arrive as strings.
const WIRE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };
export function num(v) {
  if (v === null || v === undefined) return null;
  return typeof v === "string" ? (v in WIRE ? WIRE[v] : Number(v)) : v;
}
