// A task's dependencies as a small SVG graph: what it waits for on the left, the task in the
// middle, what waits for it on the right; each node coloured by its state and linked to it.

import { cssName, s } from "./dom.js";
import { short } from "./format.js";

const W = 172;
const H = 38;
const GAP_X = 44;
/** Characters of 10-11 px monospace that fit in a node. */
const FIT = 25;
const GAP_Y = 10;

function node(task, x, y, current) {
  const href = `#/task/${encodeURIComponent(task.id)}`;
  return s("a", { href, class: ["node", `st-${cssName(task.state)}`, current ? "current" : ""], data: { node: task.id } },
    s("title", {}, `${task.id} (${task.state || "?"})\n${task.prompt || ""}`),
    s("rect", { x, y, width: W, height: H, rx: 6 }),
    s("text", { x: x + 10, y: y + 15, class: "node-id" }, short(task.id, FIT - 2)),
    s("text", { x: x + 10, y: y + 30, class: "node-sub" },
      short(task.prompt ? `${task.state || "?"} · ${task.prompt}` : task.state || "?", FIT)));
}

function edge(x1, y1, x2, y2) {
  const mid = (x1 + x2) / 2;
  return s("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: "edge", "marker-end": "url(#arrow)" });
}

/** The graph of ``task`` with its ``before`` (dependencies) and ``after`` (dependents) tasks. */
export function dependencyGraph(task, before, after) {
  const rows = Math.max(1, before.length, after.length);
  const height = rows * (H + GAP_Y) + GAP_Y;
  const cols = [before.length ? 0 : null, 1, after.length ? 2 : null].filter((c) => c !== null);
  const first = cols[0];
  const width = (cols[cols.length - 1] - first + 1) * (W + GAP_X) - GAP_X + 20;
  const colX = (c) => 10 + (c - first) * (W + GAP_X);
  const colY = (n, i) => GAP_Y + ((rows - n) * (H + GAP_Y)) / 2 + i * (H + GAP_Y);
  const cy = colY(1, 0);
  const parts = [
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))),
  ];
  before.forEach((t, i) => parts.push(edge(colX(0) + W, colY(before.length, i) + H / 2, colX(1), cy + H / 2)));
  after.forEach((t, i) => parts.push(edge(colX(1) + W, cy + H / 2, colX(2), colY(after.length, i) + H / 2)));
  before.forEach((t, i) => parts.push(node(t, colX(0), colY(before.length, i), false)));
  parts.push(node(task, colX(1), cy, true));
  after.forEach((t, i) => parts.push(node(t, colX(2), colY(after.length, i), false)));
  return s("svg", { id: "task-graph", class: "graph", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "dependencies", style: { "max-width": `${width}px` } }, parts);
}
