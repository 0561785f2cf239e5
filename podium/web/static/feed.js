// The event feed: every event the page received, newest on top, one row each
// (li[data-event-id]), at most MAX_ROWS kept. An id already shown is never shown again.

import { cssName, h, link } from "./dom.js";
import { clock, seconds, short } from "./format.js";

const MAX_ROWS = 1000;
/** The most rows one drawing adds: of a burst, only its newest are drawn (and a row says how
 * many were left out), so a tab keeps up with thousands of events a second. */
const DRAW_ROWS = 100;
/** Drawings are at least DRAW_MS apart (a frame costs the page a few ms of rendering: at 50
 * events a second, one frame each would take a fifth of a core), and SLOW_DRAW_MS apart once
 * more than BURST events wait. */
const DRAW_MS = 100;
const BURST = 20;
const SLOW_DRAW_MS = 500;

/** The state an event's colour comes from (as podium/render.py event_style). */
export function eventState(ev) {
  if (ev.kind === "agent.state") return String((ev.data || {}).state || "");
  return ev.kind.split(".").pop();
}

/** What an event's data says, on one line (an output chunk shortened). */
export function eventText(ev) {
  const data = ev.data || {};
  const parts = [];
  for (const [k, v] of Object.entries(data)) {
    if (v === null || v === "" || (Array.isArray(v) && !v.length)) continue;
    if (k === "chunk") continue;
    parts.push(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  if (typeof data.chunk === "string") parts.push(short(data.chunk, 80));
  return parts.join(" ");
}

export class Feed {
  constructor(list, filterInput, countEl) {
    this.list = list;
    this.filterInput = filterInput;
    this.countEl = countEl;
    this.shown = new Set();
    this.filter = "";
    this.total = 0;
    this.pending = [];
    this.drawing = false;
    this.lastDraw = -Infinity;
    /** Called with the events of each batch of rows drawn (the benchmark times them). */
    this.onDrawn = null;
    filterInput.addEventListener("input", () => {
      this.filter = filterInput.value.trim().toLowerCase();
      for (const li of this.list.children) li.hidden = !this.matches(li.dataset.search);
    });
  }

  matches(text) {
    return !this.filter || (text || "").includes(this.filter);
  }

  /** New events (oldest first) go on top, drawn at the next animation frame (in a burst, at
   * most every SLOW_DRAW_MS; a hidden tab draws nothing until it is shown). */
  add(events) {
    this.total += events.length;
    this.pending.push(...events);
    if (this.pending.length > MAX_ROWS) this.pending.splice(0, this.pending.length - MAX_ROWS);
    if (this.drawing) return;
    this.drawing = true;
    const gap = this.pending.length > BURST ? SLOW_DRAW_MS : DRAW_MS;
    const wait = Math.max(0, this.lastDraw + gap - performance.now());
    setTimeout(() => requestAnimationFrame(() => this.draw()), wait);
  }

  draw() {
    this.drawing = false;
    this.lastDraw = performance.now();
    const events = this.pending.filter((ev) => !this.shown.has(ev.id));
    this.pending = [];
    this.countEl.textContent = `${this.total}`;
    if (!events.length) return;
    const drawn = events.slice(-DRAW_ROWS);
    const fragment = document.createDocumentFragment();
    for (let i = drawn.length - 1; i >= 0; i--) {
      this.shown.add(drawn[i].id);
      fragment.append(this.row(drawn[i]));
    }
    const left = events.length - drawn.length;
    if (left > 0) {
      fragment.append(h("li", { class: "ev-gap" }, `… ${left} more events (a burst: podium watch shows every one)`));
    }
    this.list.prepend(fragment);
    while (this.list.childElementCount > MAX_ROWS) {
      const last = this.list.lastElementChild;
      if (last.dataset.eventId) this.shown.delete(Number(last.dataset.eventId));
      last.remove();
    }
    if (this.onDrawn) this.onDrawn(drawn);
  }

  row(ev) {
    const search = `${ev.kind} ${ev.agent_id || ""} ${ev.task_id || ""} ${eventText(ev)}`.toLowerCase();
    const li = h("li", { class: `ev st-${cssName(eventState(ev))}`, data: { eventId: ev.id, search, kind: ev.kind } },
      h("span", { class: "ev-time", title: `#${ev.id}` }, clock(seconds(ev.at ?? ev.ts))),
      h("span", { class: "ev-kind" }, ev.kind),
      ev.agent_id ? link("agent", ev.agent_id, ev.agent_id, { class: "ev-agent" }) : h("span", { class: "ev-agent" }, ""),
      ev.task_id ? link("task", ev.task_id, ev.task_id, { class: "ev-task" }) : h("span", { class: "ev-task" }, ""),
      h("span", { class: "ev-data" }, eventText(ev)));
    li.hidden = !this.matches(search);
    return li;
  }
}
