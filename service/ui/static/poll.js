// Live updates by polling: ``fn`` every ``ms`` while the tab is visible; returns a stop function.
export function poll(fn, ms) {
  let timer = null, stopped = false, busy = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && !busy) {
      busy = true;
      try { await fn(); } catch (e) { console.warn("update failed:", e.message || e); }
      busy = false;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  const live = document.getElementById("live");
  live.textContent = "live";
  return () => { stopped = true; clearTimeout(timer); live.textContent = ""; };
}
export const POLL_MS = Number(new URLSearchParams(location.search).get("poll_ms")) || 2000;
