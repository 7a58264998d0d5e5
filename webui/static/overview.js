// The overview: one card per device with its state, latest values, health and a sparkline of
// the last hour per metric. History comes from /api/sparklines, live readings over Socket.IO;
// both merge by timestamp, on load and after every reconnect, so there is no hole and no double.
//
// Built for thousands of devices: cards are inserted in order without re-sorting, and a
// card's sparklines are drawn only once it comes near the screen, fetched for up to
// SPARK_BATCH devices in one request, one request at a time, and retried with backoff.
import {
  color,
  formatTime,
  getJson,
  historyRows,
  lowerBound,
  pipelinePanel,
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
  const WINDOW_S = 3600;
  const HISTORY_POINTS = 360; // a sparkline is small: one point per 10 s is plenty
  const STALE_AFTER = 3; // usual intervals without a reading
  const SPARK_BATCH = 50; // devices per /api/sparklines request
  const RETRY_MAX_MS = 30000;
  const BUFFERED_MAX = 500; // live readings kept per device until its history is merged
  const devices = new Map(); // id -> { card, charts: Map(metric -> chart), info, history, buffered }
  const order = []; // device ids, sorted: where a new card goes
  const listEl = document.getElementById("devices");
  const emptyEl = document.getElementById("empty");
  const connectionEl = document.getElementById("connection");
  unitSwitch(/** @type {HTMLButtonElement} */ (document.getElementById("units")));
  const template = /** @type {HTMLTemplateElement} */ (document.getElementById("device-card"));
  // history: "none" (not asked yet), "wanted" (near the screen, queued), "loading" (asked),
  // "loaded". Until it is loaded, live readings are buffered and merged after the history:
  // the newest may not be stored yet when it is asked for.
  const wanted = new Set();
  const visible = new Set();
  let fetching = false;
  let retryMs = 1000;
  // Every card of the grid is as wide as the others: measure one chart's width once, not
  // each new chart's (each measurement after a change lays out all the cards again).
  let sparkWidth = null;
  const chartWidth = (el) => (sparkWidth ??= Math.max(150, el.clientWidth));

  const nearScreen = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const id = /** @type {HTMLElement} */ (entry.target).dataset.device;
        if (entry.isIntersecting) {
          visible.add(id);
          const device = devices.get(id);
          if (device && device.history === "none") want(device, id);
        } else {
          visible.delete(id);
        }
      }
    },
    { rootMargin: "400px 0px" },
  );

  function want(device, id) {
    device.history = "wanted";
    wanted.add(id);
    fetchSparklines();
  }

  function ensureDevice(id) {
    let device = devices.get(id);
    if (device) return device;
    const card = /** @type {HTMLElement} */ (template.content.firstElementChild.cloneNode(true));
    card.dataset.device = id;
    const link = /** @type {HTMLAnchorElement} */ (card.querySelector(".name a"));
    link.textContent = id;
    link.href = `/device/${encodeURIComponent(id)}`;
    showOnline(card.querySelector(".online"), null);
    device = { card, charts: new Map(), info: {}, history: "none", buffered: [] };
    devices.set(id, device);
    markAlerts(id);
    // Its place among the sorted ids, then one insertBefore.
    const at = lowerBound(order, id);
    order.splice(at, 0, id);
    const next = at + 1 < order.length ? devices.get(order[at + 1]).card : null;
    listEl.insertBefore(card, next);
    emptyEl.hidden = true;
    nearScreen.observe(card);
    return device;
  }

  function ensureChart(device, metric) {
    let chart = device.charts.get(metric);
    if (chart) return chart;
    const el = document.createElement("div");
    el.className = "chart spark";
    el.dataset.metric = metric;
    el.dataset.points = "0";
    placeByMetric(device.card.querySelector(".charts"), el);
    const series = new Series();
    const plot = new uPlot(
      {
        width: chartWidth(el),
        height: 48,
        legend: { show: false },
        cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        // A little room right of "now" for the dot on the latest value: a device that has
        // just started has all its points in the last pixel, and the dot shows it is there.
        scales: { x: { time: true, range: () => [Date.now() / 1000 - WINDOW_S, Date.now() / 1000 + WINDOW_S / 60] } },
        series: [
          {},
          {
            stroke: color(metric),
            width: 1.5,
            spanGaps: false,
            points: { show: true, size: 5, fill: color(metric), filter: (u, i) => (u.data[i].length ? [u.data[i].length - 1] : null) },
          },
        ],
      },
      [[], []],
      el,
    );
    chart = {
      el,
      series,
      plot,
      draw() {
        this.series.trim(Date.now() / 1000 - WINDOW_S);
        const [xs, ys] = this.series.data();
        plot.setData([xs, ys]);
        el.dataset.points = String(this.series.xs.length);
      },
    };
    device.charts.set(metric, chart);
    return chart;
  }

  function showLatest(device, values, lastSeenMs, seq) {
    const list = device.card.querySelector(".latest");
    for (const [metric, value] of Object.entries(values)) {
      let item = list.querySelector(`[data-metric="${CSS.escape(metric)}"]`);
      if (!item) {
        item = document.createElement("div");
        item.dataset.metric = metric;
        item.append(document.createElement("dt"), document.createElement("dd"));
        item.firstChild.textContent = metric;
        placeByMetric(list, item);
      }
      item.lastChild.textContent = `${shown(metric, value).toFixed(1)} ${unit(metric)}`.trim();
    }
    const seqText = seq == null ? "" : ` · seq ${seq}`;
    device.card.querySelector(".meta").textContent = `last seen ${formatTime(lastSeenMs)}${seqText}`;
    device.card.dataset.lastSeen = String(lastSeenMs);
    markStale(device);
  }

  // Where it is and what it measures with, and the publisher's health: its own words, as text.
  function showInfo(device, info) {
    device.info = info;
    const origin = [info.location, info.sensor].filter((part) => typeof part === "string" && part);
    device.card.querySelector(".origin").textContent = origin.join(" · ");
    const health = info.health;
    const healthEl = device.card.querySelector(".health");
    if (health && typeof health === "object") {
      // Several sensors: each one's failed reads, so the failing one is named.
      const sensors = health.sensors && typeof health.sensors === "object" ? Object.entries(health.sensors) : [];
      const failed =
        sensors.length > 1
          ? sensors.map(([name, sensor]) => `${name}: ${sensor.reads_failed ?? 0} failed reads`)
          : [`${health.reads_failed ?? 0} failed reads`];
      const parts = [...failed, `outbox ${health.outbox_depth ?? 0}`];
      if (health.outbox_dropped) parts.push(`${health.outbox_dropped} dropped`);
      if (health.clock_ok === false) parts.push("clock not set");
      if (health.refused_count) parts.push(`${health.refused_count} refused by the bridge (${health.refused?.reason ?? "?"})`);
      const errors =
        sensors.length > 1
          ? sensors.filter(([, sensor]) => sensor.last_error).map(([name, sensor]) => `${name}: ${sensor.last_error}`)
          : health.last_error
            ? [health.last_error]
            : [];
      // The corrections in force, as the publisher reports them: the record of what was applied.
      const calibration = health.calibration && typeof health.calibration === "object" ? health.calibration : {};
      const corrections = Object.entries(calibration).map(([metric, c]) => {
        const offset = Number(c.offset);
        const sign = offset < 0 ? "−" : "+";
        return `${metric}: ×${Number(c.gain).toPrecision(5)} ${sign} ${Math.abs(offset).toPrecision(3)} since ${c.since}`;
      });
      if (corrections.length) parts.push(`calibrated: ${Object.keys(calibration).join(", ")}`);
      healthEl.textContent = parts.join(" · ");
      healthEl.title = [...errors.map((e) => `last error: ${e}`), ...corrections].join("\n");
      const warn = health.reads_failed || health.outbox_dropped || health.clock_ok === false || health.refused_count;
      healthEl.dataset.state = warn ? "warn" : "ok";
    } else {
      healthEl.textContent = "";
      healthEl.title = "";
      delete healthEl.dataset.state;
    }
  }

  // Stale: no reading for three of the device's usual intervals (from its health message,
  // else from the spacing of its recent readings). Writes to the page only what changed.
  function markStale(device) {
    const lastSeen = Number(device.card.dataset.lastSeen || 0);
    let interval = device.info.health && Number(device.info.health.interval_s);
    if (!interval) {
      const spacings = [...device.charts.values()].map((c) => c.series.spacing()).filter((s) => s);
      interval = spacings.length ? Math.min(...spacings) : null;
    }
    const stale = Boolean(lastSeen && interval && Date.now() - lastSeen > STALE_AFTER * interval * 1000);
    const el = device.card.querySelector(".stale");
    const text = stale ? `stale: nothing for ${Math.round((Date.now() - lastSeen) / 1000)} s` : "";
    if (el.hidden === stale) el.hidden = !stale;
    if (el.textContent !== text) el.textContent = text;
    if (device.card.dataset.stale !== String(stale)) device.card.dataset.stale = String(stale);
  }

  // A live reading on the device's sparklines; `caughtUp`: it arrived while the history was
  // loading (or came with the replay), so it may be in that history already.
  function mergeReading(device, reading, caughtUp = false) {
    for (const [metric, value] of Object.entries(reading.metrics)) {
      const chart = ensureChart(device, metric);
      const row = [[reading.ts / 1000, shown(metric, value)]];
      if (caughtUp) chart.series.mergeCaughtUp(row);
      else chart.series.merge(row);
      redraw(chart);
    }
  }

  // One request for up to SPARK_BATCH wanted devices at a time; a failed one is put back
  // and retried after a backoff, so no card is left without its sparklines.
  async function fetchSparklines() {
    if (fetching || wanted.size === 0) return;
    fetching = true;
    const ids = [...wanted].slice(0, SPARK_BATCH);
    for (const id of ids) {
      wanted.delete(id);
      devices.get(id).history = "loading";
    }
    const query = new URLSearchParams({ since: "1h", points: String(HISTORY_POINTS) });
    for (const id of ids) query.append("device", id);
    let body = null;
    try {
      body = await getJson(`/api/sparklines?${query}`);
    } catch (error) {
      console.error("loading sparklines failed", error);
    }
    if (body) {
      retryMs = 1000;
      for (const id of ids) {
        const device = devices.get(id);
        // History up to now replaces what a chart had (after a reconnect: live points and
        // the means of their buckets would otherwise both be drawn); what arrived live
        // meanwhile is merged after it.
        const lines = body.devices[id] || {};
        for (const [metric, chart] of device.charts) if (!(metric in lines)) chart.series.loadHistory([], body.interval_ms);
        for (const [metric, points] of Object.entries(lines)) {
          const chart = ensureChart(device, metric);
          chart.series.loadHistory(historyRows({ points }, metric), body.interval_ms);
          redraw(chart);
        }
        for (const reading of device.buffered) mergeReading(device, reading, true);
        device.buffered = [];
        device.history = "loaded";
        markStale(device);
      }
      fetching = false;
      fetchSparklines();
    } else {
      for (const id of ids) {
        devices.get(id).history = "wanted";
        wanted.add(id);
      }
      setTimeout(() => {
        fetching = false;
        fetchSparklines();
      }, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }

  // Alerts not ok, by id: a card is marked while its device has one firing (or acknowledged),
  // and the banner counts what fires.
  const alerts = new Map();
  const bannerEl = /** @type {HTMLAnchorElement} */ (document.getElementById("alert-banner"));

  function markAlerts(id) {
    const card = devices.get(id)?.card;
    if (!card) return;
    const states = [...alerts.values()].filter((a) => a.device === id).map((a) => a.state);
    const mark = states.includes("firing") ? "firing" : states.includes("acknowledged") ? "acknowledged" : "";
    if (mark) card.dataset.alert = mark;
    else delete card.dataset.alert;
  }

  function showBanner() {
    const firing = [...alerts.values()].filter((a) => a.state === "firing");
    bannerEl.hidden = firing.length === 0;
    const names = [...new Set(firing.map((a) => a.device))].slice(0, 5).join(", ");
    bannerEl.textContent = `${firing.length} alert${firing.length === 1 ? "" : "s"} firing: ${names}`;
  }

  function onAlert(alert) {
    if (alert.state === "ok") alerts.delete(alert.id);
    else alerts.set(alert.id, alert);
    markAlerts(alert.device);
    showBanner();
  }

  async function loadAlerts() {
    const body = await getJson("/api/alerts");
    if (!body) return;
    const before = new Set([...alerts.values()].map((a) => a.device));
    alerts.clear();
    for (const alert of body.alerts) alerts.set(alert.id, alert);
    for (const id of new Set([...before, ...body.alerts.map((a) => a.device)])) markAlerts(id);
    showBanner();
  }

  // On first load and after every reconnect: what the server knows, then history up to now
  // for the cards on screen (the others when they come near it).
  async function loadAll() {
    loadAlerts().catch((error) => console.error("loading alerts failed", error));
    const list = await getJson("/api/devices");
    if (!list) return;
    emptyEl.hidden = list.length > 0 || devices.size > 0;
    for (const info of list) {
      const device = ensureDevice(info.device);
      showOnline(device.card.querySelector(".online"), info.online);
      showInfo(device, info);
      if (info.last_seen != null) showLatest(device, info.latest, info.last_seen, info.seq);
    }
    for (const [id, device] of devices) {
      if (device.history === "loaded") device.history = "none";
      if (device.history === "none" && visible.has(id)) want(device, id);
    }
  }

  function onReadings(readings, caughtUp) {
    for (const reading of readings) {
      const device = ensureDevice(reading.device);
      if (device.history === "loaded") mergeReading(device, reading, caughtUp);
      else {
        device.buffered.push(reading);
        if (device.buffered.length > BUFFERED_MAX) device.buffered.shift();
      }
      const last = Number(device.card.dataset.lastSeen || 0);
      if (reading.ts >= last) showLatest(device, reading.metrics, reading.ts, reading.seq);
    }
  }

  connectLive({
    connectionEl,
    onConnect: () => loadAll().catch((error) => console.error("loading devices failed", error)),
    onReadings,
    onStatus: (status) => showOnline(ensureDevice(status.device).card.querySelector(".online"), status.online),
    onHealth: (report) => {
      const device = devices.get(report.device);
      if (device) showInfo(device, { ...device.info, health: report.health });
    },
    onAlert,
  });

  setInterval(() => {
    for (const device of devices.values()) markStale(device);
  }, 5000);
  pipelinePanel(document.getElementById("pipeline"));
  new ResizeObserver(() => {
    sparkWidth = null;
    for (const device of devices.values()) {
      for (const chart of device.charts.values()) chart.plot.setSize({ width: chartWidth(chart.el), height: 48 });
    }
  }).observe(listEl);
}
