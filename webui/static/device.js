// One device: a chart per metric over a chosen range, live while the range ends now.
// History comes downsampled to about one point per pixel (mean line, min-max band); live
// readings for this device only (subscribed with the Socket.IO handshake) merge by timestamp, and after a
// reconnect the range is fetched again up to now, so a dropped connection leaves no hole.
import {
  color,
  getJson,
  historyRows,
  placeByMetric,
  redraw,
  Series,
  showOnline,
  shown,
  unit,
  unitSwitch,
} from "./common.js";
import { connectLive } from "./live.js";

{
  const PRESETS = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000, "365d": 31536000 };
  const id = document.getElementById("device").dataset.device;
  const chartsEl = document.getElementById("charts");
  const noteEl = document.getElementById("range-note");
  const connectionEl = document.getElementById("connection");
  unitSwitch(/** @type {HTMLButtonElement} */ (document.getElementById("units")));
  /** @typedef {{preset?: string, from?: number, to?: number}} Range  a preset ending now, or from-to (ms) */
  /** @type {Range} */
  let range = { preset: new URLSearchParams(window.location.search).get("range") || "1h" };
  if (!(range.preset in PRESETS)) range = { preset: "1h" };
  let charts = new Map(); // metric -> chart
  let generation = 0; // a newer range makes older answers moot
  let buffered = null; // live readings that arrive while history loads (null: none loading)
  // Live readings of the last RECENT_MS: a reading is shown before InfluxDB has it, so a
  // history loaded just after (a new range) may lack it; these are merged back after it.
  const RECENT_MS = 30000;
  const recent = []; // [arrived ms, reading]

  // The alert rules watching this device, by metric: their thresholds are drawn as dashed
  // lines; the spans an alert of it fired, as a red shade: [[from ms, to ms], ...] by metric.
  /** @type {Map<string, number[]>} */
  let thresholds = new Map();
  /** @type {Map<string, Array<[number, number]>>} */
  let excursions = new Map();

  const live = () => Boolean(range.preset);
  /** @returns {[number, number]} the shown window, in seconds */
  const windowOf = () =>
    live() ? [Date.now() / 1000 - PRESETS[range.preset], Date.now() / 1000] : [range.from / 1000, range.to / 1000];

  function makeChart(metric) {
    const el = document.createElement("section");
    el.className = "chart";
    el.dataset.metric = metric;
    el.dataset.points = "0";
    const title = document.createElement("h2");
    title.textContent = `${metric}${unit(metric) ? ` (${unit(metric)})` : ""}`;
    el.appendChild(title);
    placeByMetric(chartsEl, el);
    const series = new Series();
    const stroke = color(metric);
    const chart = { el, series, metric };
    chart.plot = new uPlot(
      {
        width: Math.max(280, chartsEl.clientWidth),
        height: 240,
        cursor: { drag: { x: true, y: false, setScale: false } }, // a drag loads its span: zoomTo
        scales: {
          x: { time: true, range: () => windowOf() },
          // Wide enough to show the rules' thresholds too.
          y: { range: (u, min, max) => yRange(metric, min, max) },
        },
        series: [
          {},
          { label: metric, stroke, width: 1.5, spanGaps: false, value: (u, v) => (v == null ? "–" : `${v.toFixed(2)} ${unit(metric)}`) },
          { label: "min", stroke: `${stroke}55`, width: 1, spanGaps: false },
          { label: "max", stroke: `${stroke}55`, width: 1, spanGaps: false },
        ],
        bands: [{ series: [3, 2], fill: `${stroke}22` }],
        axes: [{ stroke: "currentColor" }, { stroke: "currentColor", size: 56 }],
        hooks: { setSelect: [(u) => zoomTo(u)], draw: [(u) => drawAlerts(u, metric)] },
      },
      [[], [], [], []],
      el,
    );
    chart.plot.over.addEventListener("dblclick", zoomOut);
    chart.draw = () => {
      if (live()) series.trim(windowOf()[0]);
      const data = series.data();
      chart.plot.setData(data, true);
      el.dataset.points = String(series.xs.length);
      el.dataset.gaps = String(data[1].filter((value) => value === null).length); // breaks in the line
      el.dataset.window = windowOf().map((seconds) => Math.round(seconds * 1000)).join(" ");
      el.dataset.thresholds = (thresholds.get(metric) || []).join(" ");
      el.dataset.excursions = String((excursions.get(metric) || []).length);
    };
    return chart;
  }

  // Zoom: the span dragged across becomes the range, loaded again at about a point per pixel
  // (a year's chart zoomed to a day shows that day's readings, not three of the year's
  // buckets); double-click goes back to the range before.
  /** @type {Range[]} */
  const zoomedFrom = [];
  function zoomTo(u) {
    if (u.select.width < 2) return;
    const from = Math.round(u.posToVal(u.select.left, "x") * 1000);
    const to = Math.round(Math.min(Date.now(), u.posToVal(u.select.left + u.select.width, "x") * 1000));
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    if (!(from < to)) return;
    zoomedFrom.push(range);
    range = { from, to };
    history.replaceState(null, "", window.location.pathname);
    loadRange(false).catch((error) => console.error("loading history failed", error));
  }
  function zoomOut() {
    const previous = zoomedFrom.pop();
    if (!previous) return;
    range = previous;
    if (range.preset) history.replaceState(null, "", `?range=${range.preset}`);
    loadRange(false).catch((error) => console.error("loading history failed", error));
  }

  /** @returns {[number, number]} */
  function yRange(metric, min, max) {
    const levels = thresholds.get(metric) || [];
    let low = Math.min(min ?? Infinity, ...levels);
    let high = Math.max(max ?? -Infinity, ...levels);
    if (!Number.isFinite(low) || !Number.isFinite(high)) return [0, 1];
    const pad = (high - low) * 0.05 || 1;
    return [low - pad, high + pad];
  }

  function drawAlerts(u, metric) {
    const { ctx, bbox } = u;
    ctx.save();
    ctx.fillStyle = "rgba(220, 38, 38, 0.15)";
    for (const [from, to] of excursions.get(metric) || []) {
      const x0 = Math.max(bbox.left, u.valToPos(from / 1000, "x", true));
      const x1 = Math.min(bbox.left + bbox.width, u.valToPos(to / 1000, "x", true));
      if (x1 > x0) ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
    }
    ctx.strokeStyle = "rgba(220, 38, 38, 0.9)";
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1;
    for (const level of thresholds.get(metric) || []) {
      const y = u.valToPos(level, "y", true);
      ctx.beginPath();
      ctx.moveTo(bbox.left, y);
      ctx.lineTo(bbox.left + bbox.width, y);
      ctx.stroke();
    }
    ctx.restore();
  }

  // The rules of this device and its alerts' history over the shown window: thresholds, and
  // the spans from each firing to its resolution (to now, or the window's edge, while open).
  async function loadAlerts() {
    const [from] = windowOf().map((s) => s * 1000);
    const minutes = Math.min(527040, Math.max(1, Math.ceil((Date.now() - from) / 60000))); // at most 366 days
    const [rules, past, now] = await Promise.all([
      getJson(`/api/rules?${new URLSearchParams({ device: id })}`),
      getJson(`/api/alerts/history?${new URLSearchParams({ device: id, since: `${minutes}m` })}`),
      getJson("/api/alerts"),
    ]);
    thresholds = new Map();
    for (const rule of rules?.rules || []) {
      if (!rule.metric) continue;
      const level = rule.above ?? rule.below;
      thresholds.set(rule.metric, [...(thresholds.get(rule.metric) || []), level]);
    }
    excursions = new Map();
    const open = new Map(); // alert id -> [metric, since ms]
    for (const change of [...(past?.history || [])].reverse()) {
      if (!change.metric) continue;
      if (change.state === "firing" && !change.repeat && change.previous !== "acknowledged") open.set(change.id, [change.metric, change.since]);
      if (change.state === "ok" && (change.previous === "firing" || change.previous === "acknowledged")) {
        const [metric, since] = open.get(change.id) || [change.metric, from];
        excursions.set(metric, [...(excursions.get(metric) || []), [since, change.at]]);
        open.delete(change.id);
      }
    }
    for (const alert of now?.alerts || []) {
      if (alert.device !== id || !alert.metric || alert.state === "pending") continue;
      excursions.set(alert.metric, [...(excursions.get(alert.metric) || []), [alert.since, Date.now()]]);
    }
    for (const chart of charts.values()) chart.draw();
  }

  function mergeLive(readings, caughtUp) {
    if (!live()) return;
    for (const reading of readings) {
      if (reading.device !== id) continue;
      for (const [metric, value] of Object.entries(reading.metrics)) {
        let chart = charts.get(metric);
        if (!chart) charts.set(metric, (chart = makeChart(metric)));
        const row = [[reading.ts / 1000, shown(metric, value)]];
        if (caughtUp) chart.series.mergeCaughtUp(row);
        else chart.series.merge(row);
        redraw(chart);
      }
    }
  }

  function points() {
    return String(Math.min(5000, Math.max(200, Math.round(chartsEl.clientWidth))));
  }

  async function loadRange(fresh) {
    const mine = ++generation;
    buffered ??= [];
    const info = (await getJson(`/api/devices?${new URLSearchParams({ device: id })}`))?.find((d) => d.device === id);
    if (mine !== generation) return;
    if (info) showOnline(document.getElementById("online"), info.online);
    const metrics = info ? info.metrics : [];
    if (fresh) {
      charts = new Map();
      chartsEl.replaceChildren();
    }
    let interval = 0;
    const sources = new Set();
    await Promise.all(metrics.map(async (metric) => {
      const query = new URLSearchParams({ device: id, metric, points: points() });
      if (live()) query.set("since", range.preset);
      else { query.set("from", String(range.from)); query.set("to", String(range.to)); }
      const body = await getJson(`/api/history?${query}`);
      if (!body || mine !== generation) return;
      interval = Math.max(interval, body.interval_ms);
      sources.add(body.source);
      let chart = charts.get(metric);
      if (!chart) charts.set(metric, (chart = makeChart(metric)));
      chart.series.loadHistory(historyRows(body, metric), body.interval_ms);
      redraw(chart);
    }));
    if (mine !== generation) return;
    loadAlerts().catch((error) => console.error("loading alerts failed", error));
    // What arrived live meanwhile, and the replay of the last seconds: in that history
    // already, or not stored yet.
    const caughtUp = [...recent.map(([, reading]) => reading), ...buffered];
    buffered = null;
    mergeLive(caughtUp, true);
    const rolled = sources.has("1h") ? " (from the hourly rollups)" : sources.has("1m") ? " (from the minute rollups)" : "";
    noteEl.textContent = interval
      ? `Each point: the mean of ${formatInterval(interval)}, with its lowest and highest reading as the band${rolled}.`
      : "Every reading as stored.";
    document
      .querySelectorAll("[data-range]")
      .forEach((b) => b.setAttribute("aria-pressed", String(/** @type {HTMLElement} */ (b).dataset.range === range.preset)));
    document.getElementById("device").dataset.loaded = String(Date.now());
  }

  function formatInterval(ms) {
    if (ms < 60_000) return `${Math.round(ms / 1000)} s`;
    if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
    return `${(ms / 3_600_000).toFixed(1)} h`;
  }

  function downloadCsv() {
    // The values as shown, so in °F when chosen: each row says its unit.
    const lines = ["time,device,metric,value,min,max,unit"];
    for (const chart of charts.values()) {
      const { xs, ys, lows, highs } = chart.series;
      const shownUnit = unit(chart.metric);
      for (let i = 0; i < xs.length; i += 1) {
        if (ys[i] == null) continue;
        const row = [new Date(xs[i] * 1000).toISOString(), id, chart.metric, ys[i], lows[i] ?? "", highs[i] ?? ""];
        lines.push([...row, shownUnit].join(","));
      }
    }
    const [from, to] = windowOf().map((s) => new Date(s * 1000).toISOString().slice(0, 19).replaceAll(":", ""));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    link.download = `${id}_${from}_${to}.csv`;
    link.click();
    URL.revokeObjectURL(link.href);
  }

  document.querySelectorAll("[data-range]").forEach((button) =>
    button.addEventListener("click", () => {
      range = { preset: /** @type {HTMLElement} */ (button).dataset.range };
      zoomedFrom.length = 0;
      history.replaceState(null, "", `?range=${range.preset}`);
      loadRange(true);
    }));
  document.getElementById("custom-range").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(/** @type {HTMLFormElement} */ (event.target));
    const from = new Date(String(form.get("from"))).getTime();
    const to = new Date(String(form.get("to"))).getTime();
    if (!(from < to)) return;
    range = { from, to };
    zoomedFrom.length = 0;
    loadRange(true);
  });
  document.getElementById("csv").addEventListener("click", downloadCsv);
  // Pan: the same width, half of it earlier or later (a fixed range from then on, not live;
  // never past now).
  function pan(direction) {
    const [from, to] = windowOf().map((s) => s * 1000);
    const shift = ((to - from) / 2) * direction;
    const end = Math.min(Date.now(), to + shift);
    range = { from: end - (to - from), to: end };
    history.replaceState(null, "", window.location.pathname);
    loadRange(true);
  }
  document.getElementById("earlier").addEventListener("click", () => pan(-1));
  document.getElementById("later").addEventListener("click", () => pan(1));

  // The subscription goes with the handshake (and every reconnect's), so no reading of
  // another device is sent before it.
  connectLive({
    devices: [id],
    connectionEl,
    onConnect: () => loadRange(charts.size === 0).catch((error) => console.error("loading history failed", error)),
    onReadings: (readings, caughtUp) => {
      const now = Date.now();
      for (const reading of readings.slice(-5000)) recent.push([now, reading]);
      while (recent.length && (recent[0][0] < now - RECENT_MS || recent.length > 5000)) recent.shift();
      if (buffered) buffered.push(...readings.slice(-5000));
      else mergeLive(readings, caughtUp);
    },
    onStatus: (status) => {
      if (status.device === id) showOnline(document.getElementById("online"), status.online);
    },
    onAlert: (alert) => {
      if (alert.device === id) loadAlerts().catch((error) => console.error("loading alerts failed", error));
    },
  });
  new ResizeObserver(() => {
    for (const chart of charts.values()) chart.plot.setSize({ width: Math.max(280, chartsEl.clientWidth), height: 240 });
  }).observe(chartsEl);
}
