// #/history: every task, newest first, filtered by state, agent, role and prompt text, a page
// at a time ("older" asks for the next page by the task's seq cursor), kept current by events.

import { get } from "../api.js";
import { field, fill, h, link, panel, pill, row, table } from "../dom.js";
import { ago, duration, short, target, taskDuration, tokens, usd } from "../format.js";
import { coalesce } from "../live.js";
import { FINISHED, stateAfter } from "../states.js";
import { cancelButton } from "./queue.js";

const PAGE = 50;
const STATES = ["", "queued", "running", "blocked", "completed", "failed", "cancelled"];

function taskRow(t, ctx) {
  const spent = (t.tokens ?? ((t.result || {}).tokens_in || 0) + ((t.result || {}).tokens_out || 0)) || null;
  return row({ data: { task: t.id } }, [
    link("task", t.id),
    [pill(t.state), { data: { field: "state" } }],
    [short(t.prompt, 90), { class: "prompt", title: t.prompt }],
    target(t),
    t.agent_id ? link("agent", t.agent_id) : h("span", { class: "dim" }, "-"),
    [`${t.attempts}/${t.max_attempts}`, { class: "num" }],
    [duration(taskDuration(t)), { class: "num" }],
    [tokens(spent), { class: "num" }],
    [usd(t.cost_usd ?? (t.result || {}).cost_usd), { class: "num" }],
    [ago(t.completed_at || t.started_at || t.created_at), { class: "num dim" }],
    [FINISHED.has(t.state) ? "" : cancelButton(t, ctx), { class: "actions" }],
  ]);
}

export function mount(root, ctx, params, query) {
  const form = h("form", { id: "history-filter", class: "inline filters" },
    field("state", h("select", { name: "state" }, STATES.map((s) => h("option", { value: s }, s || "any")))),
    field("agent", h("input", { name: "agent", list: "agent-names", class: "mid" })),
    field("role", h("input", { name: "role", list: "role-names", class: "mid" })),
    field("prompt has", h("input", { name: "q", type: "search", class: "wide" })),
    h("button", { type: "submit" }, "Filter"));
  for (const k of ["state", "agent", "role", "q"]) if (query.get(k)) form.elements[k].value = query.get(k);
  const list = table({ id: "tasks" },
    ["task", "state", "prompt", "target", "agent", "tries", "took", "tokens", "cost", "when", ""]);
  const older = h("button", { type: "button", id: "older", hidden: true }, "older");
  const shownCount = h("span", { class: "count" }, "");
  const empty = h("p", { class: "empty", hidden: true }, "No task matches.");
  fill(root, panel(["Tasks ", shownCount], form, list.el, empty, h("div", { class: "more" }, older)));

  let next = null;
  let rows = new Map();
  let token = 0; // a newer filter's answers win over an older one's

  const filters = () => {
    const f = {};
    for (const k of ["state", "agent", "role", "q"]) f[k] = form.elements[k].value.trim();
    return f;
  };
  const count = () => {
    shownCount.textContent = `${rows.size}${next !== null ? "+" : ""}`;
    empty.hidden = rows.size > 0;
    older.hidden = next === null;
  };

  async function first() {
    const mine = ++token;
    const r = await get("/tasks", { ...filters(), limit: PAGE });
    if (mine !== token) return;
    rows = new Map();
    const trs = (r.tasks || []).map((t) => {
      const tr = taskRow(t, ctx);
      rows.set(t.id, tr);
      return tr;
    });
    list.body.replaceChildren(...trs);
    next = r.next ?? null;
    count();
  }

  // New tasks while the first page is shown: the first page again, new rows put on top.
  const refreshTop = coalesce(async () => {
    const mine = token;
    const r = await get("/tasks", { ...filters(), limit: PAGE });
    if (mine !== token) return;
    const fresh = [];
    for (const t of r.tasks || []) {
      const tr = taskRow(t, ctx);
      const old = rows.get(t.id);
      if (old) old.replaceWith(tr); else fresh.push(tr);
      rows.set(t.id, tr);
    }
    list.body.prepend(...fresh);
    count();
  }, 1000);
  // A task shown whose state changed: its row again (one request for all of them).
  const changed = new Set();
  const refreshRows = coalesce(async () => {
    const ids = [...changed];
    changed.clear();
    await Promise.all(ids.map(async (id) => {
      const r = await get(`/tasks/${encodeURIComponent(id)}`);
      const old = rows.get(id);
      if (!old) return;
      const tr = taskRow(r.task, ctx);
      old.replaceWith(tr);
      rows.set(id, tr);
    }));
  }, 1000);

  older.addEventListener("click", async () => {
    if (next === null) return;
    older.disabled = true;
    const mine = token;
    try {
      const r = await get("/tasks", { ...filters(), limit: PAGE, before: next });
      if (mine !== token) return;
      for (const t of r.tasks || []) {
        if (rows.has(t.id)) continue;
        const tr = taskRow(t, ctx);
        rows.set(t.id, tr);
        list.body.append(tr);
      }
      next = r.next ?? null;
      count();
    } finally {
      older.disabled = false;
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams(Object.entries(filters()).filter(([, v]) => v));
    ctx.replaceHash(`#/history${q.toString() ? `?${q}` : ""}`);
    first();
  });
  first();

  return {
    events(evs) {
      let top = false;
      for (const ev of evs) {
        if (!ev.task_id || !ev.kind.startsWith("task.")) continue;
        const state = stateAfter(ev);
        const tr = rows.get(ev.task_id);
        if (tr && state) {
          const cell = tr.querySelector('[data-field="state"]');
          if (cell) fill(cell, pill(state));
          if (FINISHED.has(state) || state === "running") changed.add(ev.task_id);
        } else if (!tr && (ev.kind === "task.queued" || ev.kind === "task.blocked" || ev.kind === "task.cancelled")) {
          top = true;
        }
      }
      if (changed.size) refreshRows();
      if (top) refreshTop();
    },
    unmount() {
      refreshTop.stop();
      refreshRows.stop();
      token += 1;
    },
  };
}
