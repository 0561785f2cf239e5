// #/queue: the unfinished work in the order it will be served: running, queued, blocked.

import { get, post, seg } from "../api.js";
import { fill, h, link, panel, pill, row, table } from "../dom.js";
import { ago, short, target } from "../format.js";
import { coalesce } from "../live.js";

const SECTIONS = [
  ["running", "Running", "Nothing is running."],
  ["queued", "Queued", "The queue is empty."],
  ["blocked", "Blocked", "No task waits for another."],
];

/** The button that cancels a task, for the rows of every task list. */
export function cancelButton(task, ctx) {
  const button = h("button", { type: "button", class: "small", data: { action: "cancel" } }, "cancel");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const r = await post(`/tasks/${seg(task.id)}/cancel`, {});
      ctx.toast(`task ${r.task.id} ${r.task.state}`);
    } catch (err) {
      ctx.toast(err.message, "error");
      button.disabled = false;
    }
  });
  return button;
}

function queueRow(t, ctx) {
  const deps = (t.depends_on || []);
  return row({ data: { task: t.id } }, [
    link("task", t.id),
    [pill(t.state), { data: { field: "state" } }],
    [short(t.prompt, 80), { class: "prompt", title: t.prompt }],
    target(t),
    t.priority,
    t.agent_id ? link("agent", t.agent_id) : h("span", { class: "dim" }, "-"),
    deps.length ? h("span", {}, deps.map((d, i) => [i ? " " : "", link("task", d)])) : h("span", { class: "dim" }, "-"),
    [`${t.attempts}/${t.max_attempts}`, { class: "num" }],
    [ago(t.started_at || t.created_at), { class: "num dim" }],
    [cancelButton(t, ctx), { class: "actions" }],
  ]);
}

export function mount(root, ctx) {
  const parts = {};
  const panels = SECTIONS.map(([key, title, none]) => {
    const t = table({ id: `queue-${key}` },
      ["task", "state", "prompt", "target", "priority", "agent", "depends on", "tries", "since", ""]);
    const count = h("span", { class: "count" }, "");
    const empty = h("p", { class: "empty", hidden: true }, none);
    parts[key] = { t, count, empty };
    return panel([title, " ", count], null, t.el, empty);
  });
  fill(root, panels);

  const load = coalesce(async () => {
    const q = await get("/queue");
    for (const [key] of SECTIONS) {
      const list = q[key] || [];
      const { t, count, empty } = parts[key];
      t.body.replaceChildren(...list.map((x) => queueRow(x, ctx)));
      count.textContent = String(list.length);
      empty.hidden = list.length > 0;
      t.el.hidden = list.length === 0;
    }
  }, 500);
  load();
  return {
    events(evs) {
      if (evs.some((e) => e.kind.startsWith("task.") && e.kind !== "task.output")) load();
    },
    unmount() {
      load.stop();
    },
  };
}
