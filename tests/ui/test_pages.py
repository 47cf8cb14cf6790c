"""The UI in a real browser (Debian's chromium through Playwright) on the real service with real runs:
what a person sees on each page, checked against the public API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.browser import console_errors
from tests.ui.conftest import LONG_STEPS, SPIKE_STEP, SPIKE_VALUE, UiService
from tests.ui.data import XSS_NAME, post_trace

pytestmark = pytest.mark.timeout(180)

# Pixels of a chart's canvas close to one of its series' stroke colours: the lines are drawn (series
# with equal values overdraw each other, so any of them counts).
STROKE_PIXELS = """(name) => {
  const c = window.sapoCharts.get(name);
  const cv = c.u.ctx.canvas, ctx = c.u.ctx;
  const rgb = c.u.series.map((s, i) => (typeof s.stroke === "function" ? s.stroke(c.u, i) : s.stroke)).slice(1)
    .filter((x) => typeof x === "string" && x.startsWith("#"))
    .map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
  const d = ctx.getImageData(0, 0, cv.width, cv.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 128 && rgb.some(([r, g, b]) => Math.abs(d[i] - r) < 50 && Math.abs(d[i + 1] - g) < 50 && Math.abs(d[i + 2] - b) < 50)) n++;
  }
  return n;
}"""


def _open(page: Any, ui: UiService, hash_: str, *, query: str = "") -> list[str]:
    errors = console_errors(page)
    page.goto(f"{ui.base}/{query}#{hash_}")
    page.wait_for_selector("#view[data-ready='1']", timeout=30_000)
    return errors


def _max_points(page: Any) -> int:
    """The points per series the page asks for (a min and a max per pixel column of its charts)."""
    return int(page.locator("#view").get_attribute("data-max-points"))


def _api_points(ui: UiService, run: str, metrics: list[str], max_points: int, **params: Any) -> int:
    doc = ui.api(f"/runs/{run}/series", metric=metrics, max_points=max_points, **params)
    return sum(len(doc["series"][m]["step"]) for m in metrics)


def test_runs_table_lists_the_runs_and_an_img_onerror_name_renders_as_text(page: Any, ui: UiService) -> None:
    errors = _open(page, ui, "/runs")
    rows = page.locator("#runs-table tbody tr")
    ids = {rows.nth(i).get_attribute("data-run") for i in range(rows.count())}
    assert ids >= {"sapo-40", "collapse", "healthy-start", "long-spike"}  # other tests add runs too
    link = page.locator("#runs-table tr[data-run='collapse'] a.run-link")
    assert link.text_content() == XSS_NAME  # shown as the characters typed, not as an element
    assert page.locator("#runs-table img").count() == 0
    assert page.locator("#runs-table tr[data-run='collapse'] .tag", has_text="note:<b>bold?</b>").count() == 1
    assert page.title() == "sapo-monitor"
    assert page.locator("#runs-table tr[data-run='collapse'] .badge.critical").count() == 1
    page.fill("input[name=q]", "spike")
    assert page.locator("#runs-table tbody tr").count() == 1
    page.screenshot(path=str(ui.shots / "runs.png"), full_page=True)
    assert errors == []


def test_run_page_draws_every_chart_with_the_apis_point_counts(page: Any, ui: UiService) -> None:
    errors = _open(page, ui, "/run/sapo-40")
    have = {m["name"] for m in ui.api("/runs/sapo-40/metrics")["metrics"]}
    charts = page.evaluate("() => [...window.sapoCharts.values()].map(c => c.name)")
    assert {"reward", "entropy", "log_ratio_tails", "kl", "gate_weight", "gate_saturation", "clipping", "grad_norm"} <= set(charts)
    metrics_of = page.evaluate("() => Object.fromEntries([...window.sapoCharts.values()].map("
                               "c => [c.name, c.u.series.slice(1).map(s => s.label)]))")
    for name in charts:
        metrics = metrics_of[name]
        assert set(metrics) <= have
        box = page.locator(f".chart[data-chart='{name}']")
        assert int(box.get_attribute("data-points")) == _api_points(ui, "sapo-40", metrics, _max_points(page)), name
        assert page.evaluate(STROKE_PIXELS, name) > 30, f"chart {name} draws no line"
    assert int(page.locator(".chart[data-chart='reward']").get_attribute("data-points")) == 80  # 40 steps x 2 metrics
    hm = ui.api("/runs/sapo-40/histogram/steps", max_buckets=600)
    assert int(page.locator(".chart[data-chart='heatmap']").get_attribute("data-points")) == len(hm["start"]) == 40
    colourful = page.evaluate("""() => { const c = document.querySelector('.heatmap-canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 1] > d[i] + 20) n++; return n; }""")
    assert colourful > 500
    assert "sapo-40" in page.locator(".run-header").text_content()
    page.screenshot(path=str(ui.shots / "run.png"), full_page=True)
    assert errors == []


def test_alert_bands_are_drawn_at_the_apis_steps_with_rule_and_description(page: Any, ui: UiService) -> None:
    errors = _open(page, ui, "/run/collapse")
    bands = ui.api("/runs/collapse/alert-bands")["bands"]
    assert {b["rule"] for b in bands} >= {"ratio_variance_spike", "entropy_collapse", "nonfinite"}
    drawn = page.evaluate("() => { const c = window.sapoCharts.get('reward'); return c.drawnBands.map(b => "
                          "({...b, expect: c.u.valToPos(b.from_step - 0.5, 'x'), left: c.u.bbox.left / devicePixelRatio})) }")
    assert sorted((d["rule"], d["from_step"]) for d in drawn) == sorted((b["rule"], b["from_step"]) for b in bands)
    for d in drawn:
        assert abs(d["x0"] - (d["left"] + d["expect"])) < 1.5, d
    # Every chart carries the bands.
    counts = page.evaluate("() => [...window.sapoCharts.values()].map(c => c.drawnBands.length)")
    assert set(counts) == {len(bands)}
    spike = next(b for b in bands if b["rule"] == "ratio_variance_spike")
    rows = page.locator("#run-alerts tbody tr")
    assert rows.count() == len(bands)
    # Hover inside the band: the tooltip names the rule and its description.
    x = page.evaluate("(s) => { const c = window.sapoCharts.get('entropy'); const r = c.u.over.getBoundingClientRect();"
                      " return r.left + c.u.valToPos(s, 'x'); }", spike["from_step"] + 0.2)
    y = page.evaluate("() => { const r = window.sapoCharts.get('entropy').u.over.getBoundingClientRect(); return r.top + 20; }")
    page.mouse.move(x, y)
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert "ratio_variance_spike" in tip.text_content()
    assert spike["description"] and spike["description"][:30] in tip.text_content()
    assert page.locator(".nonfinite, [data-nonfinite='0']").count() >= 1
    assert page.locator(".chart[data-chart='loss']").get_attribute("data-nonfinite") != "0"  # NaN loss marked
    page.screenshot(path=str(ui.shots / "run-alerts.png"), full_page=True)
    assert page.title() == "sapo-monitor"
    assert errors == []


def test_zoom_refetches_the_range_at_full_resolution_and_a_one_step_spike_always_shows(page: Any, ui: UiService) -> None:
    errors = _open(page, ui, "/run/long-spike")
    peak = "() => Math.max(...window.sapoCharts.get('grad_norm').u.data[1].filter(v => v !== null))"
    assert page.evaluate(peak) == SPIKE_VALUE  # downsampled whole run keeps the spike
    whole = int(page.locator(".chart[data-chart='grad_norm']").get_attribute("data-points"))
    assert 300 < _max_points(page) < LONG_STEPS
    assert whole == _api_points(ui, "long-spike", ["grad_norm"], _max_points(page)) < LONG_STEPS
    loaded = int(page.locator("#view").get_attribute("data-loaded"))
    # Drag over about 600 steps around the spike on the grad-norm chart.
    box = page.evaluate("""(a) => { const c = window.sapoCharts.get('grad_norm'); const r = c.u.over.getBoundingClientRect();
        return [r.left + c.u.valToPos(a[0], 'x'), r.left + c.u.valToPos(a[1], 'x'), r.top + r.height / 2]; }""",
                        [SPIKE_STEP - 300, SPIKE_STEP + 300])
    page.mouse.move(box[0], box[2])
    page.mouse.down()
    page.mouse.move(box[1], box[2], steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => Number(document.getElementById('view').dataset.loaded) > {loaded}")
    assert "from=" in page.url
    lo, hi = page.evaluate("() => { const p = new URLSearchParams(location.hash.split('?')[1]);"
                           " return [Number(p.get('from')), Number(p.get('to'))]; }")
    assert lo < SPIKE_STEP < hi and 500 < hi - lo < 700
    zoomed = int(page.locator(".chart[data-chart='grad_norm']").get_attribute("data-points"))
    assert zoomed == hi - lo + 1 == _api_points(ui, "long-spike", ["grad_norm"], 2000, from_step=lo, to_step=hi)
    assert page.evaluate(peak) == SPIKE_VALUE
    assert "every step" in page.locator("#zoom-info").text_content()
    page.reload()  # the zoom is in the URL
    page.wait_for_selector("#view[data-ready='1']")
    assert int(page.locator(".chart[data-chart='grad_norm']").get_attribute("data-points")) == zoomed
    page.click("#zoom-reset")
    page.wait_for_function("() => !location.hash.includes('from=')")
    assert errors == []


def test_compare_overlays_the_runs_with_their_alerts_and_summary(page: Any, ui: UiService) -> None:
    runs = ["sapo-40", "collapse", "healthy-start"]
    errors = _open(page, ui, "/compare?" + "&".join(f"run={r}" for r in runs))
    assert page.locator("#compare-summary tbody tr").count() == 3
    for name in ("compare:reward.mean", "compare:entropy.mean", "compare:log_ratio.std"):
        assert page.evaluate(f"() => window.sapoCharts.get('{name}').u.series.length") == 4
        pts = page.evaluate(f"() => window.sapoCharts.get('{name}').u.data.slice(1).map(s => s.filter(v => v !== null).length)")
        assert all(n > 0 for n in pts), (name, pts)
    doc = ui.api("/compare", run=runs, metric=["reward.mean"])
    crit = next(r for r in doc["runs"] if r["run_id"] == "collapse")["first_critical_step"]
    assert crit is not None
    row = page.locator("#compare-summary tr[data-run='collapse']")
    assert str(crit) in row.text_content()
    assert XSS_NAME in row.text_content()
    marks = page.evaluate("() => window.sapoCharts.get('compare:reward.mean').drawnBands.length")
    assert marks >= 3
    page.screenshot(path=str(ui.shots / "compare.png"), full_page=True)
    assert errors == []


def test_live_update_shows_a_step_ingested_after_the_page_opened(page: Any, ui: UiService) -> None:
    post_trace(ui.http, "live", name="live run", steps=range(1, 31))
    errors = _open(page, ui, "/run/live", query="?poll_ms=250")
    before = int(page.locator(".chart[data-chart='reward']").get_attribute("data-points"))
    assert "steps 1 to 30" in page.locator("#run-steps").text_content()
    post_trace(ui.http, "live", name="live run", steps=range(31, 36))
    page.wait_for_function("() => document.getElementById('run-steps').textContent.includes('to 35')", timeout=15_000)
    page.wait_for_function(f"() => Number(document.querySelector(\".chart[data-chart='reward']\").dataset.points) > {before}")
    assert page.evaluate("() => Math.max(...window.sapoCharts.get('reward').u.data[0])") == 35
    assert errors == []


def test_alerts_page_lists_alerts_and_links_to_the_run_at_their_steps(page: Any, ui: UiService) -> None:
    errors = _open(page, ui, "/alerts?state=firing")
    firing = ui.api("/alerts", state="firing")
    rows = page.locator("#alerts-table tbody tr")
    assert rows.count() == len(firing) > 0
    first = firing[0]
    row = page.locator(f"#alerts-table tr[data-alert='{first['id']}']")
    assert first["rule"] in row.text_content()
    row.locator("a").click()
    page.wait_for_selector("#view[data-ready='1']")
    assert f"/run/{first['run_id']}?from=" in page.url
    page.screenshot(path=str(ui.shots / "alerts.png"), full_page=True)
    assert errors == []


def test_docs_work_offline_and_every_ui_response_has_a_strict_csp(page: Any, ui: UiService) -> None:
    outside: list[str] = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(ui.base)
               else (outside.append(route.request.url), route.abort()))
    errors = console_errors(page)
    page.goto(ui.base + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "sapo-monitor" in page.locator(".swagger-ui .info .title").text_content()
    assert page.locator(".opblock-tag", has_text="runs").count() >= 1
    assert outside == [] and errors == []
    for path in ("/", "/ui/main.js", "/docs"):
        csp = ui.http.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    html = ui.http.get("/").text
    assert "<script>" not in html and " style=" not in html and "onclick" not in html


def test_y_axis_labels_are_exact_and_fit_their_axis(page: Any, ui: UiService) -> None:
    # Small negative KL values and large response lengths: the labels a fixed-width axis cut off.
    assert ui.http.put("/api/v1/runs/axes", json={"project": "ui", "algorithm": "sapo"}).status_code in (200, 201)
    steps = [{"step": s, "time": 1_764_000_000.0 + s, "metrics": {"kl.k1": -3.21e-4 + 2.3e-5 * s, "kl.k3": 1.7e-5 * s,
                                                                  "response_len.mean": 1_234_567.0 + 13.0 * s}}
             for s in range(30)]
    assert ui.http.post("/api/v1/runs/axes/steps", json={"schema": 1, "steps": steps}).status_code in (200, 202)
    errors = _open(page, ui, "/run/axes")
    labels = page.evaluate("""async () => { const { tickLabels } = await import('/ui/charts.js');
      return [[0, 0.025, 0.05, 0.075], [-0.0002, -0.0001, 0, 0.0001], [0, 2.5e-5, 5e-5], [2e6, 2.5e6, 3e6]].map(tickLabels); }""")
    assert labels == [["0", "0.025", "0.050", "0.075"], ["-0.0002", "-0.0001", "0", "0.0001"],
                      ["0", "2.5e-5", "5.0e-5"], ["2.0e+6", "2.5e+6", "3.0e+6"]]
    # Every chart's y axis is as wide as its longest label (KL's were cut at a fixed 64 px).
    fits = page.evaluate("""() => [...window.sapoCharts.values()].map((c) => {
      const a = c.u.axes[1], ctx = document.createElement('canvas').getContext('2d');
      ctx.font = a.font[0];
      const widest = Math.max(...a._values.map((v) => ctx.measureText(v).width)) / devicePixelRatio;
      return [c.name, widest + a.ticks.size + a.gap <= a._size]; })""")
    assert fits and all(ok for _, ok in fits), fits
    assert errors == []
