// The overview: one card per device with its state, latest values, health and a sparkline of
// the last hour per metric. History comes from /api/history, live readings over Socket.IO;
// both merge by timestamp, on load and after every reconnect, so there is no hole and no double.
"use strict";

(() => {
  const { unit, color, formatTime, toLogin, getJson, setBadge, Series, historyRows, redraw } = sensorpipe;
  const WINDOW_S = 3600;
  const HISTORY_POINTS = 360; // a sparkline is small: one point per 10 s is plenty
  const STALE_AFTER = 3; // usual intervals without a reading
  const devices = new Map(); // id -> { card, charts: Map(metric -> chart), info }
  const listEl = document.getElementById("devices");
  const emptyEl = document.getElementById("empty");
  const connectionEl = document.getElementById("connection");
  const template = document.getElementById("device-card");

  function ensureDevice(id) {
    let device = devices.get(id);
    if (device) return device;
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.device = id;
    const link = card.querySelector(".name a");
    link.textContent = id;
    link.href = `/device/${encodeURIComponent(id)}`;
    setBadge(card.querySelector(".online"), "unknown", "no status");
    device = { card, charts: new Map(), info: {} };
    devices.set(id, device);
    const after = [...devices.keys()].sort().find((other) => other > id);
    listEl.insertBefore(card, after ? devices.get(after).card : null);
    emptyEl.hidden = true;
    return device;
  }

  function ensureChart(device, metric) {
    let chart = device.charts.get(metric);
    if (chart) return chart;
    const el = document.createElement("div");
    el.className = "chart spark";
    el.dataset.metric = metric;
    el.dataset.points = "0";
    device.card.querySelector(".charts").appendChild(el);
    const series = new Series();
    const plot = new uPlot(
      {
        width: Math.max(150, el.clientWidth),
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
        series.trim(Date.now() / 1000 - WINDOW_S);
        const [xs, ys] = series.data();
        plot.setData([xs, ys]);
        el.dataset.points = String(series.xs.length);
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
        list.appendChild(item);
      }
      item.lastChild.textContent = `${value.toFixed(1)} ${unit(metric)}`.trim();
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
      const parts = [`${health.reads_failed ?? 0} failed reads`, `outbox ${health.outbox_depth ?? 0}`];
      if (health.outbox_dropped) parts.push(`${health.outbox_dropped} dropped`);
      if (health.clock_ok === false) parts.push("clock not set");
      healthEl.textContent = parts.join(" · ");
      healthEl.title = health.last_error ? `last error: ${health.last_error}` : "";
      healthEl.dataset.state = health.reads_failed || health.outbox_dropped || health.clock_ok === false ? "warn" : "ok";
    } else {
      healthEl.textContent = "";
    }
  }

  function setOnline(device, online) {
    const badge = device.card.querySelector(".online");
    if (online == null) setBadge(badge, "unknown", "no status");
    else setBadge(badge, online ? "online" : "offline", online ? "online" : "offline");
  }

  // Stale: no reading for three of the device's usual intervals (from its health message,
  // else from the spacing of its recent readings).
  function markStale(device) {
    const lastSeen = Number(device.card.dataset.lastSeen || 0);
    let interval = device.info.health && Number(device.info.health.interval_s);
    if (!interval) {
      const spacings = [...device.charts.values()].map((c) => c.series.spacing()).filter((s) => s);
      interval = spacings.length ? Math.min(...spacings) : null;
    }
    const stale = Boolean(lastSeen && interval && Date.now() - lastSeen > STALE_AFTER * interval * 1000);
    const el = device.card.querySelector(".stale");
    el.hidden = !stale;
    el.textContent = stale ? `stale: nothing for ${Math.round((Date.now() - lastSeen) / 1000)} s` : "";
    device.card.dataset.stale = String(stale);
  }

  async function loadHistory(id, metric) {
    const query = new URLSearchParams({ device: id, metric, since: "1h", points: String(HISTORY_POINTS) });
    const body = await getJson(`/api/history?${query}`);
    if (!body) return;
    const chart = ensureChart(ensureDevice(id), metric);
    chart.series.merge(historyRows(body));
    redraw(chart);
  }

  // On first load and after every reconnect: what the server knows, then history up to now.
  async function loadAll() {
    const list = await getJson("/api/devices");
    if (!list) return;
    emptyEl.hidden = list.length > 0 || devices.size > 0;
    const loads = [];
    for (const info of list) {
      const device = ensureDevice(info.device);
      setOnline(device, info.online);
      showInfo(device, info);
      if (info.last_seen != null) showLatest(device, info.latest, info.last_seen, info.seq);
      for (const metric of info.metrics) loads.push(loadHistory(info.device, metric));
    }
    await Promise.all(loads);
    for (const device of devices.values()) markStale(device);
  }

  const socket = io();
  socket.on("connect", () => {
    setBadge(connectionEl, "connected", "live");
    loadAll().catch((error) => console.error("loading history failed", error));
  });
  socket.on("disconnect", () => setBadge(connectionEl, "disconnected", "reconnecting…"));
  socket.on("connect_error", (error) => {
    if (error && error.message === "sign in first") toLogin();
  });
  socket.on("readings", (readings) => {
    for (const reading of readings) {
      const device = ensureDevice(reading.device);
      for (const [metric, value] of Object.entries(reading.metrics)) {
        const chart = ensureChart(device, metric);
        chart.series.merge([[reading.ts / 1000, value]]);
        redraw(chart);
      }
      const last = Number(device.card.dataset.lastSeen || 0);
      if (reading.ts >= last) showLatest(device, reading.metrics, reading.ts, reading.seq);
    }
  });
  socket.on("status", (status) => setOnline(ensureDevice(status.device), status.online));
  socket.on("health", (report) => {
    const device = devices.get(report.device);
    if (device) showInfo(device, { ...device.info, health: report.health });
  });

  setInterval(() => {
    for (const device of devices.values()) markStale(device);
  }, 5000);
  // Health and status arrive as events; read them again now and then in case one was
  // missed while reconnecting.
  setInterval(async () => {
    const list = await getJson("/api/devices");
    for (const info of list || []) {
      const device = devices.get(info.device);
      if (!device) continue;
      setOnline(device, info.online);
      showInfo(device, info);
    }
  }, 30000);
  sensorpipe.pipelinePanel(document.getElementById("pipeline"));
  new ResizeObserver(() => {
    for (const device of devices.values()) {
      for (const chart of device.charts.values()) chart.plot.setSize({ width: Math.max(150, chart.el.clientWidth), height: 48 });
    }
  }).observe(listEl);
})();
