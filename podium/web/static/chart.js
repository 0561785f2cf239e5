// Hand-made SVG charts (no library): bars over time, and horizontal bars per name.

import { h, s } from "./dom.js";
import { clock, seconds } from "./format.js";

const MAX_BARS = 120;
const PALETTE = 8;

/** Stacked bars over time: ``series`` is [{name, points}], every series with the same buckets
 * (``points`` with ``t``); ``value(point)`` is a bar's height; a legend names the series. */
export function timeBars(series, bucketS, value, label) {
  const W = 900;
  const H = 220;
  const left = 60;
  const bottom = 24;
  const base = (series[0]?.points || []).slice(-MAX_BARS);
  const n = base.length;
  if (!n) return h("p", { class: "empty" }, "No buckets.");
  const offset = (series[0].points.length - n);
  const totals = base.map((_, i) => series.reduce((sum, x) => sum + (value(x.points[offset + i]) || 0), 0));
  const max = Math.max(0, ...totals);
  if (!max) return h("p", { class: "empty" }, "Nothing in this window yet (shell and echo agents spend no tokens).");
  const slot = (W - left - 8) / n;
  const bar = Math.max(1, slot * 0.78);
  const scale = (v) => (v / max) * (H - bottom - 12);
  const parts = [
    s("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis" }),
    s("text", { x: left - 6, y: 16, class: "tick", "text-anchor": "end" }, label(max)),
    s("text", { x: left - 6, y: H - bottom, class: "tick", "text-anchor": "end" }, label(0)),
    s("line", { x1: left, y1: 12, x2: W, y2: 12, class: "grid-line" }),
  ];
  const every = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += every) {
    const t = seconds(base[i].t);
    parts.push(s("text", { x: left + i * slot + slot / 2, y: H - 6, class: "tick", "text-anchor": "middle" },
      bucketS >= 86400 ? new Date(t * 1000).toISOString().slice(5, 10) : clock(t).slice(0, bucketS >= 60 ? 5 : 8)));
  }
  for (let i = 0; i < n; i++) {
    let y = H - bottom;
    const t = seconds(base[i].t);
    series.forEach((x, k) => {
      const v = value(x.points[offset + i]) || 0;
      if (!v) return;
      const hgt = scale(v);
      y -= hgt;
      parts.push(s("rect", { x: left + i * slot + (slot - bar) / 2, y, width: bar, height: hgt, class: `bar c${k % PALETTE}` },
        s("title", {}, `${clock(t)} ${x.name}: ${label(v)}`)));
    });
  }
  const legend = series.length > 1 ? h("div", { class: "legend" }, series.map((x, k) =>
    h("span", { class: "legend-item" }, h("span", { class: `swatch c${k % PALETTE}` }), x.name))) : null;
  return h("div", {}, s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
    "aria-label": "over time" }, parts), legend);
}

/** One horizontal bar per ``[name, value]``, longest first. */
export function nameBars(pairs, label) {
  const rows = pairs.slice().sort((a, b) => b[1] - a[1]);
  const max = Math.max(0, ...rows.map((r) => r[1])) || 1;
  return h("div", { class: "hbars" }, rows.map(([name, v]) => h("div", { class: "hbar" },
    h("span", { class: "hbar-name" }, name ?? "(none)"),
    h("span", { class: "hbar-track" }, h("span", { class: "hbar-fill", style: { width: `${(100 * v) / max}%` } })),
    h("span", { class: "hbar-value" }, label(v)))));
}
