// The live dashboard: one card per device, one uPlot chart per metric.
// History of the last hour comes from /api/history; live readings arrive over Socket.IO
// and are merged in by timestamp, so a reading seen twice is drawn once.
// Every string that comes from a device is set with textContent, never as HTML.
"use strict";

(() => {
  const WINDOW_S = 3600;
  const HISTORY_POINTS = 720; // one point per 5 s over the hour
  const UNITS = { temperature: "°C", humidity: "%" };
  const devices = new Map(); // device id -> { card, series: Map(metric -> series) }
  const listEl = document.getElementById("devices");
  const emptyEl = document.getElementById("empty");
  const connectionEl = document.getElementById("connection");
  const template = document.getElementById("device-card");

  const unit = (metric) => UNITS[metric] || "";
  const formatTime = (ms) => (ms == null ? "never" : new Date(ms).toLocaleString());

  function setBadge(el, state, text) {
    el.dataset.state = state;
    el.textContent = text;
  }

  function ensureDevice(id) {
    let device = devices.get(id);
    if (device) return device;
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.device = id;
    card.querySelector(".name").textContent = id;
    setBadge(card.querySelector(".online"), "unknown", "no status");
    device = { card, series: new Map() };
    devices.set(id, device);
    // Keep the cards in device order.
    const after = [...devices.keys()].sort().find((other) => other > id);
    listEl.insertBefore(card, after ? devices.get(after).card : null);
    emptyEl.hidden = true;
    return device;
  }

  function chartWidth(device) {
    return Math.max(200, device.card.querySelector(".charts").clientWidth);
  }

  function ensureSeries(device, metric) {
    let series = device.series.get(metric);
    if (series) return series;
    const el = document.createElement("div");
    el.className = "chart";
    el.dataset.metric = metric;
    el.dataset.points = "0";
    const title = document.createElement("h3");
    title.textContent = `${metric}${unit(metric) ? ` (${unit(metric)})` : ""}`;
    el.appendChild(title);
    device.card.querySelector(".charts").appendChild(el);
    series = { el, xs: [], ys: [], plot: null, dirty: false };
    series.plot = new uPlot(
      {
        width: chartWidth(device),
        height: 160,
        legend: { show: false },
        // Always the whole window up to now, so every chart reads the same way.
        scales: { x: { time: true, range: () => [Date.now() / 1000 - WINDOW_S, Date.now() / 1000] } },
        series: [{}, { label: metric, stroke: metric === "humidity" ? "#3b82f6" : "#ef6c00", width: 1.5, spanGaps: false }],
        axes: [{ stroke: "currentColor" }, { stroke: "currentColor", size: 50 }],
      },
      [[], []],
      el,
    );
    device.series.set(metric, series);
    return series;
  }

  // Insert points ([seconds, value], any order) by time; an equal time replaces.
  function merge(series, points) {
    const { xs, ys } = series;
    for (const [x, y] of points) {
      if (!xs.length || x > xs[xs.length - 1]) {
        xs.push(x);
        ys.push(y);
        continue;
      }
      let lo = 0;
      let hi = xs.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (xs[mid] < x) lo = mid + 1;
        else hi = mid;
      }
      if (xs[lo] === x) ys[lo] = y;
      else {
        xs.splice(lo, 0, x);
        ys.splice(lo, 0, y);
      }
    }
    const cutoff = Date.now() / 1000 - WINDOW_S;
    let drop = 0;
    while (drop < xs.length && xs[drop] < cutoff) drop += 1;
    if (drop) {
      xs.splice(0, drop);
      ys.splice(0, drop);
    }
    redraw(series);
  }

  // uPlot has no append: set the whole window at most once per animation frame.
  const dirty = new Set();
  function redraw(series) {
    dirty.add(series);
    if (dirty.size === 1) requestAnimationFrame(flush);
  }
  function flush() {
    for (const series of dirty) {
      series.plot.setData([series.xs, series.ys]);
      series.el.dataset.points = String(series.xs.length);
    }
    dirty.clear();
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
  }

  function setOnline(device, online) {
    const badge = device.card.querySelector(".online");
    if (online == null) setBadge(badge, "unknown", "no status");
    else setBadge(badge, online ? "online" : "offline", online ? "online" : "offline");
  }

  // Signed out (the password is on and the session ended): back to the login page.
  function toLogin() {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
  }

  async function getJson(url) {
    const response = await fetch(url);
    if (response.status === 401) toLogin();
    return response.ok ? response.json() : null;
  }

  // Where the device is and what it measures with: the publisher's own words, as text.
  function showOrigin(device, info) {
    const parts = [info.location, info.sensor].filter((part) => typeof part === "string" && part);
    device.card.querySelector(".origin").textContent = parts.join(" · ");
  }

  async function loadHistory(id, metric) {
    const query = new URLSearchParams({ device: id, metric, since: "1h", points: String(HISTORY_POINTS) });
    const body = await getJson(`/api/history?${query}`);
    if (!body) return;
    merge(ensureSeries(ensureDevice(id), metric), body.points.map(([ms, value]) => [ms / 1000, value]));
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
      showOrigin(device, info);
      if (info.last_seen != null) showLatest(device, info.latest, info.last_seen, info.seq);
      for (const metric of info.metrics) loads.push(loadHistory(info.device, metric));
    }
    await Promise.all(loads);
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
        merge(ensureSeries(device, metric), [[reading.ts / 1000, value]]);
      }
      const last = Number(device.card.dataset.lastSeen || 0);
      if (reading.ts >= last) showLatest(device, reading.metrics, reading.ts, reading.seq);
    }
  });
  socket.on("status", (status) => setOnline(ensureDevice(status.device), status.online));

  new ResizeObserver(() => {
    for (const device of devices.values()) {
      for (const series of device.series.values()) series.plot.setSize({ width: chartWidth(device), height: 160 });
    }
  }).observe(listEl);
})();
