// The two packages the pages load as classic scripts (served from node_modules, /vendor/):
// uPlot and socket.io-client put `uPlot` and `io` on the window. Only for the type check.
import type uPlotType from "uplot";
import type { io as ioType } from "socket.io-client";

declare global {
  const uPlot: typeof uPlotType;
  const io: typeof ioType;
}
export {};
