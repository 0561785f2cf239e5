// #/agent/ID: one agent: its state and spend, its recent tasks, inbox and outbox, a form to
// send it a message, its log, and (for an interactive agent) a read-only copy of its tmux pane.

import { ApiError, get, post, seg } from "../api.js";
import { field, fill, h, link, panel, pill, row, table } from "../dom.js";
import { age, ago, clock, duration, short, taskDuration, tokens, usd, when } from "../format.js";
import { coalesce } from "../live.js";
import { twoClick } from "../controls.js";
import { heartbeatAge } from "./team.js";

const LOG_LINES = 200;

function messageRow(m) {
  return row({ data: { message: m.id } }, [
    [clock(m.created_at), { class: "num dim", title: when(m.created_at) }],
    m.kind,
    m.sender || "-",
    m.task_id ? link("task", m.task_id) : "",
    [h("span", { class: "body" }, m.body), { class: "message-body" }],
    [m.read_at ? "read" : m.delivered_at ? "delivered" : "", { class: "dim" }],
  ]);
}

function taskRow(t) {
  return row({ data: { task: t.id } }, [
    link("task", t.id),
    [pill(t.state), { data: { field: "state" } }],
    [short(t.prompt, 70), { class: "prompt", title: t.prompt }],
    [duration(taskDuration(t)), { class: "num" }],
    [ago(t.completed_at || t.started_at || t.created_at), { class: "num dim" }],
  ]);
}

export function mount(root, ctx, params) {
  const id = params[0];
  const state = h("span", { data: { field: "state" } });
  const title = h("h1", { class: "title" }, "Agent ", h("code", {}, id), " ", state);
  const stop = twoClick("Stop", "Stop it?", async () => {
    const r = await post("/team/down", { agents: [id], drain: false });
    ctx.toast(`stopped ${(r.stopped || []).join(", ") || "nothing"}`);
  });
  const metaBox = h("div");
  const tasks = table({ id: "agent-tasks" }, ["task", "state", "prompt", "took", "when"]);
  const inbox = table({ id: "inbox" }, ["at", "kind", "from", "task", "message", ""]);
  const outbox = table({ id: "outbox" }, ["at", "kind", "from", "task", "message", ""]);
  const body = h("textarea", { name: "body", rows: "2", required: true, placeholder: "a message for this agent" });
  const send = h("form", { id: "send-message", class: "inline" }, field("Message", body),
    h("button", { type: "submit", class: "primary" }, "Send"));
  const log = h("pre", { id: "agent-log", class: "text output" });
  const logRefresh = h("button", { type: "button", class: "small" }, "reload");
  const pane = h("pre", { id: "agent-pane", class: "text output pane" });
  const paneRefresh = h("button", { type: "button", class: "small" }, "reload");
  const panePanel = panel("Pane (read-only)", paneRefresh, pane);
  panePanel.hidden = true;
  fill(root,
    h("div", { class: "view-head" }, title, h("div", { class: "panel-tools" }, h("a", { id: "agent-history", href: `#/history?agent=${encodeURIComponent(id)}` }, "all its tasks"), stop)),
    h("div", { class: "cols" },
      h("div", { class: "col-main" },
        panel("Recent tasks", null, tasks.el),
        panel("Inbox", null, send, inbox.el),
        panel("Outbox", null, outbox.el),
        panel("Log", logRefresh, log), panePanel),
      h("div", { class: "col-side" }, panel("Agent", null, metaBox))));

  let fetchedAt = performance.now();
  let agent = null;
  function renderMeta() {
    if (!agent) return;
    const a = agent;
    fill(state, pill(a.state));
    document.title = `${a.id} ${a.state} · Podium`;
    fill(metaBox, h("dl", { class: "meta" }, [
      ["roles", (a.roles || []).join(", ") || "-"],
      ["backend", a.backend],
      ["host", a.host],
      ["pid", a.pid ?? "-"],
      ["task", a.current_task ? link("task", a.current_task) : "-"],
      ["heartbeat", h("span", { data: { field: "heartbeat" } }, `${age(heartbeatAge(a, fetchedAt))} ago`)],
      ["registered", when(a.registered_at)],
      ["tasks done", String(a.tasks_done ?? 0)],
      ["tokens", `${tokens((a.tokens_in || 0) + (a.tokens_out || 0))} (in ${tokens(a.tokens_in)}, out ${tokens(a.tokens_out)})`],
      ["cost", usd(a.cost_usd)],
      a.note && ["note", a.note],
    ].filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }

  const load = coalesce(async () => {
    const r = await get(`/agents/${seg(id)}`);
    fetchedAt = performance.now();
    agent = { ...r.agent };
    renderMeta();
    if (agent.has_pane || agent.interactive) loadPane();
    tasks.body.replaceChildren(...(r.tasks || []).map(taskRow));
    inbox.body.replaceChildren(...(r.inbox || []).slice().reverse().map(messageRow));
    outbox.body.replaceChildren(...(r.outbox || []).slice().reverse().map(messageRow));
  }, 250);
  const loadLog = coalesce(async () => {
    try {
      const r = await get(`/agents/${seg(id)}/log`, { lines: LOG_LINES });
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent = r.text || "(empty)";
      if (atEnd) log.scrollTop = log.scrollHeight;
    } catch (err) {
      log.textContent = err.message;
    }
  }, 1000);
  const loadPane = coalesce(async () => {
    try {
      const r = await get(`/agents/${seg(id)}/pane`);
      pane.textContent = r.text || "";
      panePanel.hidden = false;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) pane.textContent = err.message;
      panePanel.hidden = !(err instanceof ApiError) || err.status === 404;
    }
  }, 500);
  logRefresh.addEventListener("click", () => loadLog());
  paneRefresh.addEventListener("click", () => loadPane());
  send.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await post(`/agents/${seg(id)}/messages`, { body: body.value });
      body.value = "";
      ctx.toast("message sent");
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  load();
  loadLog();
  return {
    events(evs) {
      const mine = evs.filter((e) => e.agent_id === id || (agent && e.task_id && e.task_id === agent.current_task));
      if (!mine.length) return;
      if (mine.some((e) => e.kind !== "task.output")) {
        load();
        loadLog();
      } else if (agent?.has_pane || agent?.interactive) {
        loadPane();
      }
    },
    tick() {
      const el = metaBox.querySelector('[data-field="heartbeat"]');
      if (el && agent) el.textContent = `${age(heartbeatAge(agent, fetchedAt))} ago`;
    },
    unmount() {
      load.stop();
      loadLog.stop();
      loadPane.stop();
    },
  };
}
