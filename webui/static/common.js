// What the overview and the device page share: fetching, signing in again, time series that
// merge history and live readings by timestamp, gaps, and the pipeline panel (an ES module).
// Every string that comes from a device is set with textContent, never as HTML.

const UNITS = {
  temperature: "°C",
  humidity: "%",
  dew_point: "°C",
  absolute_humidity: "g/m³",
  pressure: "hPa",
};
const COLORS = { temperature: "#ef6c00", humidity: "#3b82f6" };

// °C or °F, the viewer's choice, kept in this browser. Stored values, the API and the CSV
// stay in °C; only what a page shows is converted.
const CELSIUS = new Set(["temperature", "dew_point"]);
const UNITS_KEY = "sensorpipe.temperature-unit";
function storedChoice() {
  try {
    return window.localStorage.getItem(UNITS_KEY);
  } catch {
    return null; // storage off (a private window in some browsers): °C
  }
}
const inFahrenheit = storedChoice() === "F";

// A publisher with several sensors names each one's metrics after it: freezer_temperature is
// a temperature, freezer_absolute_humidity an absolute humidity (the longest known ending).
const KNOWN = Object.keys(UNITS).sort((a, b) => b.length - a.length);
/** [the sensor's name or "", the known metric it is, or the name itself]. */
export function metricParts(metric) {
  if (metric in UNITS) return ["", metric];
  const base = KNOWN.find((known) => metric.endsWith(`_${known}`));
  return base ? [metric.slice(0, -base.length - 1), base] : ["", metric];
}
const baseOf = (metric) => metricParts(metric)[1];
/** A metric's value as this page shows it (°F for temperatures when chosen). */
export const shown = (metric, value) =>
  value != null && inFahrenheit && CELSIUS.has(baseOf(metric)) ? (value * 9) / 5 + 32 : value;
export const unit = (metric) =>
  inFahrenheit && CELSIUS.has(baseOf(metric)) ? "°F" : UNITS[baseOf(metric)] || "";

/** The °C/°F button: shows the other choice; a click keeps it and loads the page again. */
export function unitSwitch(button) {
  button.textContent = inFahrenheit ? "°C" : "°F";
  button.title = `show temperatures in ${inFahrenheit ? "°C" : "°F"}`;
  button.addEventListener("click", () => {
    try {
      window.localStorage.setItem(UNITS_KEY, inFahrenheit ? "C" : "F");
    } catch {
      return; // nowhere to keep it
    }
    window.location.reload();
  });
}

// A device's metrics in one order on every load and page: the unnamed sensor's first, then
// each named sensor's by its name; within each the known ones as listed here, then the rest
// by name (readings, the API and the charts' fetches each come in any order).
const ORDER = Object.keys(UNITS);
const rank = (base) => (ORDER.includes(base) ? ORDER.indexOf(base) : ORDER.length);
const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
export function compareMetrics(a, b) {
  const [sensorA, baseA] = metricParts(a);
  const [sensorB, baseB] = metricParts(b);
  return byName(sensorA, sensorB) || rank(baseA) - rank(baseB) || byName(a, b);
}

/** Append `el` (with data-metric) to `parent` among its children in that order. */
export function placeByMetric(parent, el) {
  const metric = el.dataset.metric || "";
  const next = [...parent.children].find((child) => compareMetrics(child.dataset.metric || "", metric) > 0);
  parent.insertBefore(el, next || null);
}
export const color = (metric) => COLORS[baseOf(metric)] || "#8b5cf6";
export const formatTime = (ms) => (ms == null ? "never" : new Date(ms).toLocaleString());

// Signed out (the password is on and the session ended): to the login page, then back here.
export function toLogin() {
  const here = window.location.pathname + window.location.search;
  window.location.assign(`/login?next=${encodeURIComponent(here)}`);
}

export async function getJson(url) {
  const response = await fetch(url);
  if (response.status === 401) toLogin();
  return response.ok ? response.json() : null;
}

export function setBadge(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

// A device's status badge: online, offline, or no status (none seen yet, or cleared).
export function showOnline(el, online) {
  if (online == null) setBadge(el, "unknown", "no status");
  else setBadge(el, online ? "online" : "offline", online ? "online" : "offline");
}

// Where `value` goes in the ascending array `sorted`: the index of the first element that is
// not below it (binary search).
export function lowerBound(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// One metric's points, sorted by time (seconds). `ys` is the value (the mean for bucketed
// history); `lows`/`highs` the bucket's min and max (the value itself for raw points).
export class Series {
  constructor() {
    this.xs = [];
    this.ys = [];
    this.lows = [];
    this.highs = [];
    this.bucketMs = 0; // the history's bucket width (0: raw readings)
    this.buckets = new Set(); // middles (ms) of the history's buckets that hold readings
  }

  // Start anew from history (rows as historyRows gives them; `intervalMs` 0 for raw ones).
  loadHistory(rows, intervalMs) {
    for (const list of [this.xs, this.ys, this.lows, this.highs]) list.length = 0;
    this.bucketMs = intervalMs;
    this.buckets = new Set(intervalMs ? rows.filter((row) => row[1] != null).map((row) => row[0] * 1000) : []);
    this.merge(rows);
  }

  // Merge readings that arrived live while the history was being loaded (and the replay of
  // the last seconds): each is in that history already or not yet stored. Raw history has it
  // at the same time (merge replaces); bucketed history has it in its bucket's mean, so a
  // reading whose bucket is there is left out, and one whose bucket is missing is added.
  mergeCaughtUp(rows) {
    const width = this.bucketMs;
    this.merge(width ? rows.filter(([x]) => !this.buckets.has(Math.floor((x * 1000) / width) * width + width / 2)) : rows);
  }

  // Insert [seconds, value, min?, max?] rows (any order); an equal time replaces, so a
  // reading seen in history and live is drawn once.
  merge(rows) {
    const { xs } = this;
    for (const [x, y, low = y, high = y] of rows) {
      // Most rows come in order: append without a search.
      const at = xs.length && x <= xs[xs.length - 1] ? lowerBound(xs, x) : xs.length;
      if (xs[at] === x) {
        this.ys[at] = y;
        this.lows[at] = low;
        this.highs[at] = high;
      } else {
        xs.splice(at, 0, x);
        this.ys.splice(at, 0, y);
        this.lows.splice(at, 0, low);
        this.highs.splice(at, 0, high);
      }
    }
  }

  // Forget what lies before `seconds`.
  trim(seconds) {
    let drop = 0;
    while (drop < this.xs.length && this.xs[drop] < seconds) drop += 1;
    if (drop) for (const list of [this.xs, this.ys, this.lows, this.highs]) list.splice(0, drop);
  }

  // The usual spacing of the points (median), in seconds; null with fewer than 3.
  spacing() {
    const gaps = [];
    for (let i = 1; i < this.xs.length; i += 1) gaps.push(this.xs[i] - this.xs[i - 1]);
    if (gaps.length < 2) return null;
    gaps.sort((a, b) => a - b);
    return gaps[gaps.length >> 1];
  }

  // uPlot data: [xs, ys, lows, highs] with a null inserted wherever the points are more
  // than three usual spacings apart, so missing data is a gap, never a line across it.
  data() {
    const step = this.spacing();
    const out = [[], [], [], []];
    for (let i = 0; i < this.xs.length; i += 1) {
      if (step && i > 0 && this.xs[i] - this.xs[i - 1] > 3 * step) {
        out[0].push((this.xs[i] + this.xs[i - 1]) / 2);
        out[1].push(null);
        out[2].push(null);
        out[3].push(null);
      }
      out[0].push(this.xs[i]);
      out[1].push(this.ys[i]);
      out[2].push(this.lows[i]);
      out[3].push(this.highs[i]);
    }
    return out;
  }
}

// History rows from /api/history as Series rows (seconds).
/** uPlot's rows from an API answer's points, in seconds and in the shown unit of `metric`. */
export function historyRows(body, metric) {
  return body.points.map(([ms, ...values]) => [ms / 1000, ...values.map((value) => shown(metric, value))]);
}

// uPlot has no append: redraw each chart at most once per animation frame.
const dirty = new Set();
export function redraw(chart) {
  dirty.add(chart);
  if (dirty.size === 1) requestAnimationFrame(() => {
    for (const item of dirty) item.draw();
    dirty.clear();
  });
}

// The pipeline panel: rate of stored readings, rejections, broker and InfluxDB state.
export function pipelinePanel(el) {
  let previous = null;
  async function refresh() {
    const body = await getJson("/api/pipeline");
    if (!body) return;
    const now = performance.now();
    const rate = previous ? ((body.stored - previous.stored) * 1000) / (now - previous.at) : null;
    previous = { stored: body.stored, at: now };
    el.querySelector(".rate").textContent = rate == null ? "…" : `${rate.toFixed(1)} readings/s stored`;
    const rejected = el.querySelector(".rejected");
    rejected.textContent = `${body.rejected} rejected`;
    rejected.dataset.state = body.rejected ? "warn" : "ok";
    setBadge(el.querySelector(".mqtt"), body.mqtt === "connected" ? "online" : "offline", `MQTT ${body.mqtt}`);
    const influx = body.influxdb ? `InfluxDB ${body.influxdb}` : "InfluxDB unreachable";
    const influxOk = body.influxdb && !body.reasons.some((r) => r.startsWith("InfluxDB"));
    setBadge(el.querySelector(".influx"), influxOk ? "online" : "offline", influx);
  }
  refresh();
  setInterval(refresh, 5000);
}
