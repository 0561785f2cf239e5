// #/team: every agent with its state, current task, heartbeat age and spend; starting and
// stopping agents; the latest tasks under it.

import { get, post } from "../api.js";
import { fill, h, link, panel, pill, row, table } from "../dom.js";
import { age, ago, duration, short, taskDuration, tokens, usd } from "../format.js";
import { coalesce } from "../live.js";
import { twoClick } from "../controls.js";
import { stateAfter } from "../states.js";

const BACKENDS = ["shell", "echo", "claude", "codex", "gemini", "openai", "local"];
const RECENT = 12;
/** Events after which an agent's row may have changed (its state, task, counters). */
const AGENT_KINDS = /^(agent\.|task\.(claimed|completed|failed|cancelled|requeued|stale_result))/;

/** The sort order of agents: live ones first, then by name with numbers in order. */
export function byName(a, b) {
  const live = (x) => (x.state === "stopped" || x.state === "dead" ? 1 : 0);
  return live(a) - live(b) || a.id.localeCompare(b.id, undefined, { numeric: true });
}

/** Heartbeat age now: the server's age when read, plus the time since the page read it. */
export function heartbeatAge(agent, fetchedAt) {
  if (typeof agent.heartbeat_age_s !== "number") return null;
  return agent.heartbeat_age_s + (performance.now() - fetchedAt) / 1000;
}

function agentRow(a, fetchedAt, ctx) {
  const stop = a.state === "stopped" || a.state === "dead" ? "" :
    twoClick("stop", "stop?", async () => {
      const r = await post("/team/down", { agents: [a.id], drain: false });
      ctx.toast(`stopped ${(r.stopped || []).join(", ") || "nothing"}`);
    }, { small: true });
  const hb = heartbeatAge(a, fetchedAt);
  return row({ data: { agent: a.id } }, [
    link("agent", a.id, a.id, { class: "strong" }),
    [pill(a.state), { data: { field: "state" } }],
    (a.roles || []).join(", ") || "-",
    a.backend,
    [`${a.host}${a.pid ? ` · ${a.pid}` : ""}`, { class: "dim" }],
    a.current_task ? link("task", a.current_task) : h("span", { class: "dim" }, "-"),
    [age(hb), { data: { field: "heartbeat", hb: a.heartbeat_age_s ?? "" }, class: hb > 30 ? "warn num" : "num" }],
    [String(a.tasks_done ?? 0), { class: "num" }],
    [tokens(a.tokens ?? (a.tokens_in || 0) + (a.tokens_out || 0)), { class: "num" }],
    [usd(a.cost_usd), { class: "num" }],
    [stop, { class: "actions" }],
  ]);
}

function recentRow(t) {
  return row({ data: { recent: t.id } }, [
    link("task", t.id),
    [pill(t.state), { data: { field: "state" } }],
    t.agent_id ? link("agent", t.agent_id) : h("span", { class: "dim" }, "-"),
    [short(t.prompt, 70), { class: "prompt", title: t.prompt }],
    [duration(taskDuration(t)), { class: "num" }],
    [ago(t.completed_at || t.started_at || t.created_at), { class: "num dim" }],
  ]);
}

function startForm(ctx) {
  const n = h("input", { name: "n", type: "number", min: "1", max: "64", value: "1", class: "narrow" });
  const backend = h("select", { name: "backend" }, BACKENDS.map((b) => h("option", { value: b }, b)));
  const role = h("input", { name: "role", placeholder: "role (optional)", class: "mid" });
  const form = h("form", { id: "team-up", class: "inline" }, n, backend, role,
    h("button", { type: "submit" }, "Start"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const roles = role.value.split(/[\s,]+/).filter(Boolean);
    try {
      const r = await post("/team/up", { n: Number(n.value) || 1, backend: backend.value, roles, options: {} });
      ctx.toast(`started ${(r.started || []).join(", ")}`);
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  return form;
}

export function mount(root, ctx) {
  const agents = table({ id: "agents" },
    ["agent", "state", "roles", "backend", "host · pid", "task", "heartbeat", "done", "tokens", "cost", ""]);
  const recent = table({ id: "recent-tasks" }, ["task", "state", "agent", "prompt", "took", "when"]);
  const stopAll = twoClick("Stop all", "Stop every agent?", async () => {
    const r = await post("/team/down", { agents: null, drain: false });
    ctx.toast(`stopped ${(r.stopped || []).length} agent(s)`);
  });
  const empty = h("p", { class: "empty", hidden: true },
    "No agents yet. Start some here, or run ", h("code", {}, "podium up 3"), " in a terminal.");
  fill(root,
    panel("Team", [startForm(ctx), stopAll], agents.el, empty),
    panel("Latest tasks", link("history", null, "all tasks →"), recent.el));

  let fetchedAt = performance.now();
  let agentRows = new Map();
  let recentRows = new Map();
  const loadAgents = coalesce(async () => {
    const r = await get("/agents");
    fetchedAt = performance.now();
    const list = (r.agents || []).slice().sort(byName);
    ctx.rememberAgents(list);
    agentRows = new Map(list.map((a) => [a.id, agentRow(a, fetchedAt, ctx)]));
    agents.body.replaceChildren(...agentRows.values());
    empty.hidden = list.length > 0;
  }, 500);
  const loadRecent = coalesce(async () => {
    const r = await get("/tasks", { limit: RECENT });
    recentRows = new Map((r.tasks || []).map((t) => [t.id, recentRow(t)]));
    recent.body.replaceChildren(...recentRows.values());
  }, 1000);
  // What an event says outright is shown at once; the rest of the row follows with the
  // re-fetch (at most one a second in a burst).
  const setState = (el, state) => {
    const cell = el && el.querySelector('[data-field="state"]');
    if (cell && state) fill(cell, pill(state));
  };
  loadAgents();
  loadRecent();

  return {
    events(evs) {
      let agentsChanged = false;
      let tasksChanged = false;
      for (const e of evs) {
        if (e.kind === "task.output") continue;
        if (AGENT_KINDS.test(e.kind)) agentsChanged = true;
        if (e.kind === "agent.state" && e.agent_id) setState(agentRows.get(e.agent_id), (e.data || {}).state);
        if (e.kind.startsWith("task.")) {
          tasksChanged = true;
          if (e.task_id) setState(recentRows.get(e.task_id), stateAfter(e));
        }
      }
      if (agentsChanged) loadAgents();
      if (tasksChanged) loadRecent();
    },
    tick() {
      for (const td of agents.body.querySelectorAll('[data-field="heartbeat"]')) {
        const base = td.dataset.hb === "" ? null : Number(td.dataset.hb);
        const s = base === null ? null : base + (performance.now() - fetchedAt) / 1000;
        td.textContent = age(s);
        td.classList.toggle("warn", s !== null && s > 30);
      }
    },
    unmount() {
      loadAgents.stop();
      loadRecent.stop();
    },
  };
}
