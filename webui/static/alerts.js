// The alerts page: what fires now (with a form to acknowledge it) and the last week's
// changes; it reloads both whenever the server sends an `alert` event (an ES module).
// Every string that comes from a device or a person is set with textContent, never as HTML.
import { formatTime, getJson, shown, toLogin, unit } from "./common.js";
import { connectLive } from "./live.js";

{
  const activeBody = /** @type {HTMLTableSectionElement} */ (document.querySelector("#active tbody"));
  const historyBody = /** @type {HTMLTableSectionElement} */ (document.querySelector("#history tbody"));
  const noneEl = /** @type {HTMLElement} */ (document.getElementById("none"));
  const deliveriesEl = /** @type {HTMLElement} */ (document.getElementById("deliveries"));
  const connectionEl = /** @type {HTMLElement} */ (document.getElementById("connection"));
  const formTemplate = /** @type {HTMLTemplateElement} */ (document.getElementById("ack-form"));
  const BY_KEY = "sensorpipe.ack.by"; // the name typed last time, in this browser

  /** @param {HTMLTableRowElement} row @param {Array<string | number | null>} cells */
  function addCells(row, cells) {
    for (const text of cells) row.insertCell().textContent = text == null ? "" : String(text);
  }

  // Values and levels in the viewer's unit (°F when chosen), with it; rules stay in °C.
  const inUnit = (metric, value) => {
    if (typeof value !== "number") return "";
    const converted = shown(metric, value);
    const text = converted === value ? String(value) : converted.toFixed(1);
    return unit(metric) ? `${text} ${unit(metric)}` : text;
  };
  const describe = (alert) =>
    alert.kind === "no_data"
      ? `no reading for ${alert.threshold} s`
      : `${alert.metric} ${alert.kind} ${inUnit(alert.metric, alert.threshold)}`;

  function ackForm(alert) {
    const form = /** @type {HTMLFormElement} */ (formTemplate.content.firstElementChild.cloneNode(true));
    const by = /** @type {HTMLInputElement} */ (form.elements.namedItem("by"));
    const comment = /** @type {HTMLInputElement} */ (form.elements.namedItem("comment"));
    const error = /** @type {HTMLElement} */ (form.querySelector(".error"));
    by.value = localStorage.getItem(BY_KEY) || "";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      localStorage.setItem(BY_KEY, by.value);
      const response = await fetch(`/api/alerts/${encodeURIComponent(alert.id)}/ack`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ by: by.value, comment: comment.value }),
      });
      if (response.status === 401) toLogin();
      if (!response.ok) error.textContent = (await response.json().catch(() => ({}))).error || `failed (${response.status})`;
      else load(); // the `alert` event does it too; this is for a page whose socket is down
    });
    return form;
  }

  function showActive(alerts) {
    activeBody.replaceChildren();
    noneEl.hidden = alerts.length > 0;
    for (const alert of alerts) {
      const row = activeBody.insertRow();
      row.dataset.state = alert.state;
      row.dataset.id = alert.id;
      const state = alert.state + (alert.late ? " (late)" : "");
      const by = alert.acknowledged_by ? ` by ${alert.acknowledged_by}: ${alert.comment || ""}` : "";
      addCells(row, [state + by, alert.rule, alert.device, inUnit(alert.metric, alert.value), describe(alert), formatTime(alert.since)]);
      const cell = row.insertCell();
      if (alert.state === "firing") cell.append(ackForm(alert));
    }
  }

  function showHistory(history) {
    historyBody.replaceChildren();
    for (const change of history) {
      const row = historyBody.insertRow();
      row.dataset.state = change.state;
      const became = change.repeat ? "reminder" : `${change.previous} → ${change.state}${change.late ? " (late)" : ""}`;
      addCells(row, [formatTime(change.found), change.id, became, formatTime(change.at), inUnit(change.metric, change.value), change.by, change.comment]);
    }
  }

  function showDeliveries(deliveries) {
    const errors = Object.entries(deliveries.errors || {});
    if (!deliveries.targets.length) deliveriesEl.textContent = "No notification targets set (SENSORPIPE_ALERT_NOTIFY): alerts show here and over MQTT only.";
    else if (!deliveries.undelivered) deliveriesEl.textContent = `Notifications go to ${deliveries.targets.join(", ")}; all delivered.`;
    else {
      const why = errors.map(([target, error]) => `${target}: ${error}`).join("; ");
      deliveriesEl.textContent = `${deliveries.undelivered} notifications not delivered yet, retrying${why ? ` (${why})` : ""}.`;
    }
    deliveriesEl.dataset.state = deliveries.undelivered ? "warn" : "ok";
  }

  // --- rules: those of the rules file are read-only here --------------------------------
  const rulesBody = /** @type {HTMLTableSectionElement} */ (document.querySelector("#rules tbody"));
  const ruleForm = /** @type {HTMLFormElement} */ (document.getElementById("rule-form"));
  const ruleError = /** @type {HTMLElement} */ (ruleForm.querySelector(".error"));
  const field = (name) => /** @type {HTMLInputElement} */ (ruleForm.elements.namedItem(name));
  const known = new Map(); // id -> rule

  function condition(rule) {
    if (rule.no_data) return `no reading for ${rule.no_data}`;
    const kind = rule.above !== undefined ? "above" : "below";
    const extra = [rule.for && rule.for !== "0s" ? `for ${rule.for}` : "", rule.clear !== undefined ? `clear ${rule.clear}` : ""];
    if (rule.repeat) extra.push(`repeat ${rule.repeat}`);
    return [`${rule.metric} ${kind} ${rule[kind]}`, ...extra.filter((e) => e)].join(", ");
  }

  async function send(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) toLogin();
    if (response.ok) return null;
    return (await response.json().catch(() => ({}))).error || `failed (${response.status})`;
  }

  function showRules(rules) {
    rulesBody.replaceChildren();
    known.clear();
    for (const rule of rules) {
      known.set(rule.id, rule);
      const row = rulesBody.insertRow();
      row.dataset.id = rule.id;
      // A rule that watches no device the bridge knows: most often a typo in its devices.
      const watching = rule.watching === 0 ? " (no device known matches)" : "";
      addCells(row, [rule.id, rule.devices.join(", ") + watching, condition(rule), rule.severity]);
      row.dataset.watching = String(rule.watching);
      const cell = row.insertCell();
      if (rule.provisioned) {
        cell.textContent = "from the rules file";
        continue;
      }
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.addEventListener("click", () => fillForm(rule));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        ruleError.textContent = (await send("DELETE", `/api/rules/${encodeURIComponent(rule.id)}`)) || "";
        load();
      });
      cell.append(edit, remove);
    }
  }

  function fillForm(rule) {
    const kind = rule.no_data ? "no_data" : rule.above !== undefined ? "above" : "below";
    field("id").value = rule.id;
    field("devices").value = rule.devices.join(", ");
    field("kind").value = kind;
    field("metric").value = rule.metric || "";
    field("threshold").value = String(rule[kind]);
    field("for").value = rule.for && rule.for !== "0s" ? rule.for : "";
    field("clear").value = rule.clear === undefined ? "" : String(rule.clear);
    field("repeat").value = rule.repeat || "";
    field("severity").value = rule.severity;
  }

  ruleForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = field("kind").value;
    const body = { id: field("id").value.trim(), severity: field("severity").value };
    const devices = field("devices").value.split(",").map((d) => d.trim()).filter((d) => d);
    body.devices = devices.length ? devices : ["*"];
    const threshold = field("threshold").value.trim();
    if (kind === "no_data") body.no_data = threshold;
    else {
      body.metric = field("metric").value.trim();
      body[kind] = Number(threshold); // the server refuses what is not a number, naming it
      if (field("for").value.trim()) body.for = field("for").value.trim();
      if (field("clear").value.trim()) body.clear = Number(field("clear").value);
    }
    if (field("repeat").value.trim()) body.repeat = field("repeat").value.trim();
    const existing = known.get(body.id);
    const error = existing
      ? await send("PUT", `/api/rules/${encodeURIComponent(body.id)}`, body)
      : await send("POST", "/api/rules", body);
    ruleError.textContent = error || "";
    if (!error) ruleForm.reset();
    load();
  });

  async function load() {
    const [now, past, rules] = await Promise.all([
      getJson("/api/alerts"),
      getJson("/api/alerts/history?since=7d"),
      getJson("/api/rules"),
    ]);
    if (rules) showRules(rules.rules);
    if (now) {
      showActive(now.alerts);
      showDeliveries(now.deliveries);
    }
    if (past) showHistory(past.history);
  }

  connectLive({
    connectionEl,
    onConnect: () => load().catch((error) => console.error("loading alerts failed", error)),
    onReadings: () => {},
    onAlert: () => load().catch((error) => console.error("loading alerts failed", error)),
  });
}
