// The Podium dashboard: the top bar (store, connection, counts), the views switched by
// location.hash, and the one live event stream that keeps them current. After the first load
// nothing is polled: an event re-fetches the one thing it names.

import { ApiError, get, session } from "./api.js";
import { addTaskDialog, broadcastDialog, toast } from "./controls.js";
import { fill, h } from "./dom.js";
import { Feed } from "./feed.js";
import { Live, coalesce } from "./live.js";
import * as agentView from "./views/agent.js";
import * as contextView from "./views/context.js";
import * as costsView from "./views/costs.js";
import * as eventsView from "./views/events.js";
import * as historyView from "./views/history.js";
import * as memoryView from "./views/memory.js";
import * as queueView from "./views/queue.js";
import * as taskView from "./views/task.js";
import * as teamView from "./views/team.js";

const VIEWS = {
  team: teamView, queue: queueView, history: historyView, task: taskView,
  agent: agentView, context: contextView, costs: costsView, events: eventsView, memory: memoryView,
};
const TABS = [["team", "Team"], ["queue", "Queue"], ["history", "History"], ["context", "Context"],
  ["memory", "Memory"], ["costs", "Costs"], ["events", "Events"]];
/** Events first shown in the feed when the page opens. */
const FIRST_EVENTS = 100;
/** Events kept for the views that show part of what came before they opened. */
const KEPT_EVENTS = 2000;
const AGENT_STATES = ["starting", "idle", "busy", "waiting_input", "stopped", "dead"];
const TASK_STATES = ["running", "queued", "blocked", "completed", "failed", "cancelled"];

const live = new Live();
const kept = [];
let current = null; // {name, view}

const ctx = {
  live,
  toast,
  go(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  },
  replaceHash(hash) {
    history.replaceState(null, "", hash);
  },
  recentEvents: () => kept.slice(),
  rememberAgents(list) {
    const names = document.getElementById("agent-names");
    const roles = document.getElementById("role-names");
    names.replaceChildren(...list.map((a) => h("option", { value: a.id })));
    const all = [...new Set(list.flatMap((a) => a.roles || []))].sort();
    roles.replaceChildren(...all.map((r) => h("option", { value: r })));
  },
};

/** ("task", ["ID"], URLSearchParams) from "#/task/ID?x=y". */
export function parseHash(hash) {
  const [path, qs] = (hash || "").replace(/^#\/?/, "").split("?", 2);
  const [name, ...params] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: VIEWS[name] ? name : "team", params, query: new URLSearchParams(qs || "") };
}

function route() {
  const { name, params, query } = parseHash(location.hash);
  if (current) {
    try {
      current.view.unmount?.();
    } catch (err) {
      console.error(err);
    }
  }
  document.title = "Podium";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
  const root = document.getElementById("view");
  root.replaceChildren();
  root.dataset.view = name;
  current = { name, view: VIEWS[name].mount(root, ctx, params, query) || {} };
}

function counts(status) {
  const box = document.getElementById("counts");
  const agents = status.agents || {};
  const tasks = status.tasks || {};
  const chip = (state, n, href) => h("a", { class: `chip st-${state}`, href, data: { count: state }, title: state },
    h("span", { class: "chip-n" }, String(n)), h("span", { class: "chip-label" }, state.replace("_", " ")));
  fill(box,
    h("span", { class: "group" }, h("span", { class: "group-label" }, "agents"),
      h("span", { class: "chip-n", data: { count: "agents" } }, String(agents.total ?? 0)),
      AGENT_STATES.filter((st) => agents[st]).map((st) => chip(st, agents[st], "#/team"))),
    h("span", { class: "group" }, h("span", { class: "group-label" }, "tasks"),
      TASK_STATES.filter((st) => tasks[st] || ["running", "queued"].includes(st))
        .map((st) => chip(st, tasks[st] ?? 0, st === "running" || st === "queued" || st === "blocked" ? "#/queue" : `#/history?state=${st}`))));
  const warnings = [...(status.warnings || []),
    ...(status.unrunnable || []).map((u) => `${u.tasks} queued task(s) for ${u.target_agent || (u.target_role ? `role ${u.target_role}` : "any agent")}: ${u.reason}`)];
  const w = document.getElementById("warnings");
  fill(w, warnings.map((x) => h("div", { class: "warning" }, x)));
  w.hidden = !warnings.length;
}

function shell(s) {
  document.getElementById("store").textContent = s.store || "";
  document.getElementById("store").title = s.store || "";
  document.getElementById("version").textContent = s.version ? `v${s.version}` : "";
  fill(document.getElementById("nav"), TABS.map(([view, label]) => h("a", { href: `#/${view}`, data: { view } }, label)));
  const addTask = addTaskDialog(ctx);
  const broadcast = broadcastDialog(ctx);
  document.body.append(addTask, broadcast);
  const open = (dialog) => () => {
    dialog.showModal();
    dialog.querySelector("textarea, input")?.focus();
  };
  document.querySelector('[data-action="new-task"]').addEventListener("click", open(addTask));
  document.querySelector('[data-action="broadcast"]').addEventListener("click", open(broadcast));
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLElement && e.target.closest("input, textarea, select, dialog");
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "n") {
      e.preventDefault();
      open(addTask)();
    }
  });
}

function unauthorized() {
  const box = document.getElementById("locked");
  box.hidden = false;
  document.body.classList.add("locked");
}

async function boot() {
  document.addEventListener("podium:unauthorized", unauthorized);
  let s;
  try {
    s = await session();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      fill(document.getElementById("view"), h("p", { class: "error-text" }, `cannot reach the server: ${err.message}`));
    }
    return;
  }
  shell(s);
  const conn = document.getElementById("connection");
  live.onState((state) => {
    conn.textContent = state === "live" ? "live" : "reconnecting";
    conn.className = state === "live" ? "conn live" : "conn down";
  });
  const feed = new Feed(document.getElementById("events"), document.getElementById("feed-filter"),
    document.getElementById("feed-count"));
  const status = await get("/status");
  counts(status);
  const refreshStatus = coalesce(async () => counts(await get("/status")), 1000);
  live.on((evs) => {
    kept.push(...evs);
    if (kept.length > KEPT_EVENTS) kept.splice(0, kept.length - KEPT_EVENTS);
    feed.add(evs);
    if (evs.some((e) => (e.kind.startsWith("task.") && e.kind !== "task.output") || e.kind.startsWith("agent."))) refreshStatus();
    if (current?.view.events) current.view.events(evs);
  });
  const last = status.last_event_id || 0;
  const first = await get("/events", { after: Math.max(0, last - FIRST_EVENTS), limit: FIRST_EVENTS });
  live.feed(first.events || []);
  live.cursor = Math.max(live.cursor, first.cursor || 0, last);
  live.connect();
  const agents = await get("/agents").catch(() => ({ agents: [] }));
  ctx.rememberAgents(agents.agents || []);
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => current?.view.tick?.(), 1000);
  // For the browser tests and the benchmark: the page's cursor and connection count.
  window.podium = { live, feed };
}

boot();
