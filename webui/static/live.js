// A page's one Socket.IO connection: the connection badge, signing in again when the session
// ended, and the replay of what is valid but maybe not yet in history (an ES module).
import { setBadge, toLogin } from "./common.js";

// `devices`: subscribe to these only, from the handshake on (and on every reconnect); null:
// every device. `onConnect` runs on every (re)connect, after which the page reloads its
// history. `onReadings(readings, caughtUp)` gets live readings (caughtUp false) and the
// replay (caughtUp true: these may be in the history already, see Series.mergeCaughtUp).
/**
 * @param {{devices?: string[] | null, connectionEl: HTMLElement, onConnect: () => void,
 *   onReadings: (readings: any[], caughtUp: boolean) => void, onStatus?: (status: any) => void,
 *   onHealth?: (report: any) => void, onAlert?: (alert: any) => void}} options
 */
export function connectLive({ devices = null, connectionEl, onConnect, onReadings, onStatus, onHealth, onAlert }) {
  const socket = devices ? io({ auth: { devices } }) : io();
  socket.on("connect", () => {
    setBadge(connectionEl, "connected", "live");
    // Readings arrive here before InfluxDB has them: those of the last few seconds, which
    // the history this page is about to load may lack.
    socket.emit("replay", null, (readings) => {
      if (Array.isArray(readings) && readings.length) onReadings(readings, true);
    });
    onConnect();
  });
  socket.on("disconnect", () => setBadge(connectionEl, "disconnected", "reconnecting…"));
  socket.on("connect_error", (error) => {
    if (error && error.message === "sign in first") toLogin();
  });
  socket.on("readings", (readings) => onReadings(readings, false));
  if (onStatus) socket.on("status", onStatus);
  if (onHealth) socket.on("health", onHealth);
  if (onAlert) socket.on("alert", onAlert);
  return socket;
}
