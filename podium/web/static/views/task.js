// #/task/ID: one task: its prompt, context, dependencies (a graph), attempts, its output —
// streamed from task.output events while it runs — and its result with tokens, cost, duration.

import { get, post, seg } from "../api.js";
import { fill, h, link, panel, pill, row, table } from "../dom.js";
import { clock, duration, seconds, target, taskDuration, tokens, usd, when } from "../format.js";
import { dependencyGraph } from "../graph.js";
import { coalesce } from "../live.js";
import { FINISHED } from "../states.js";

const NEW_RUN = new Set(["task.claimed", "task.requeued", "task.retried"]);
const MAX_LIVE_CHARS = 4 * 1024 * 1024;
const MAX_GRAPH_NODES = 12;

/** ``chunks`` that ``text`` does not end with already: the output fetched may hold the first
 * chunks that arrived while it was being read; the rest follow it. */
export function notYetIn(text, chunks) {
  for (let k = chunks.length; k > 0; k--) {
    if (text.endsWith(chunks.slice(0, k).join(""))) return chunks.slice(k);
  }
  return chunks;
}

function resultOf(task) {
  return task.result || {};
}

function outputOf(task) {
  const r = resultOf(task);
  return { output: task.output ?? r.output ?? "", stderr: task.stderr ?? r.stderr ?? "",
    encoding: task.output_encoding || r.output_encoding || "utf-8" };
}

function meta(pairs) {
  return h("dl", { class: "meta" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function attemptsView(task) {
  if (!Array.isArray(task.attempts)) return null;
  const t = table({ id: "task-attempts" }, ["#", "agent", "state", "started", "ended", "error"]);
  t.body.replaceChildren(...task.attempts.map((a, i) => row({}, [
    String(a.attempt ?? i + 1),
    a.agent_id ? link("agent", a.agent_id) : "-",
    pill(a.state || a.status || a.kind || "-"),
    clock(a.started_at ?? a.at),
    clock(a.completed_at ?? a.ended_at),
    a.error || a.reason || "",
  ])));
  return panel("Attempts", null, t.el);
}

export function mount(root, ctx, params) {
  const id = params[0];
  const state = h("span", { id: "task-state", data: { field: "state" } });
  const cancel = h("button", { type: "button", data: { action: "cancel" } }, "Cancel");
  const retry = h("button", { type: "button", data: { action: "retry" } }, "Retry");
  const title = h("h1", { class: "title" }, "Task ", h("code", {}, id), " ", state);
  const metaBox = h("div", { id: "task-meta" });
  const prompt = h("pre", { id: "task-prompt", class: "text" });
  const context = h("pre", { id: "task-context", class: "text" });
  const contextPanel = panel("Context", null, context);
  const graphBox = h("div", { class: "graph-box" });
  const graphPanel = panel("Dependencies", null, graphBox);
  const output = h("pre", { id: "task-output", class: "text output" });
  const stderr = h("pre", { id: "task-stderr", class: "text output err" });
  const stderrPanel = panel("Stderr", null, stderr);
  const liveMark = h("span", { class: "live-mark", hidden: true }, "● streaming");
  const outputNote = h("p", { class: "note", id: "task-output-note" });
  const attemptsBox = h("div");
  const timeline = h("ol", { id: "task-events", class: "timeline" });
  fill(root,
    h("div", { class: "view-head" }, title, h("div", { class: "panel-tools" }, cancel, retry)),
    h("div", { class: "cols" },
      h("div", { class: "col-main" },
        panel("Prompt", null, prompt), contextPanel, graphPanel,
        panel(["Output ", liveMark], null, output, outputNote), stderrPanel),
      h("div", { class: "col-side" },
        panel("Task", null, metaBox), attemptsBox, panel("Events", null, timeline))));

  let task = null;
  let streaming = false;
  let buffered = null; // chunks that came while the output was being read
  let liveChars = 0;
  let outputLoaded = false;

  function appendChunk(text) {
    if (liveChars > MAX_LIVE_CHARS) return;
    const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    output.append(document.createTextNode(text));
    liveChars += text.length;
    if (atEnd) output.scrollTop = output.scrollHeight;
  }

  function showOutput(t) {
    const o = outputOf(t);
    output.textContent = o.output || "";
    stderr.textContent = o.stderr || "";
    stderrPanel.hidden = !o.stderr;
    const r = resultOf(t);
    const notes = [];
    if (o.encoding !== "utf-8") notes.push(`output is not UTF-8: shown as ${o.encoding}`);
    if (r.output_truncated) notes.push("output was cut at the backend's limit");
    if (r.output_pruned) notes.push("output was pruned (podium store prune)");
    if (!o.output && FINISHED.has(t.state)) notes.push("no output");
    outputNote.textContent = notes.join("; ");
  }

  async function loadRunningOutput() {
    buffered = [];
    const o = await get(`/tasks/${seg(id)}/output`);
    const text = o.output || "";
    output.textContent = text;
    liveChars = text.length;
    stderr.textContent = o.stderr || "";
    stderrPanel.hidden = !o.stderr;
    for (const chunk of notYetIn(text, buffered)) appendChunk(chunk);
    buffered = null;
    outputNote.textContent = "";
  }

  async function graph(t) {
    // The neighbours' states come with the task (``states``); a neighbour missing there is
    // read on its own (at most MAX_GRAPH_NODES each side).
    const states = t.states || {};
    const asTask = async (x) => {
      if (typeof x === "object" && x !== null) return x;
      if (states[x]) return { id: x, state: states[x], prompt: "" };
      try {
        return (await get(`/tasks/${seg(x)}`)).task;
      } catch {
        return { id: x, state: "?", prompt: "" };
      }
    };
    const before = await Promise.all((t.depends_on || []).slice(0, MAX_GRAPH_NODES).map(asTask));
    const after = await Promise.all((t.dependents || []).slice(0, MAX_GRAPH_NODES).map(asTask));
    graphPanel.hidden = !before.length && !after.length;
    if (!graphPanel.hidden) fill(graphBox, dependencyGraph(t, before, after));
  }

  function render(t) {
    const r = resultOf(t);
    fill(state, pill(t.state));
    document.title = `${t.id} ${t.state} · Podium`;
    cancel.disabled = FINISHED.has(t.state);
    retry.disabled = !(t.state === "failed" || t.state === "cancelled");
    prompt.textContent = t.prompt;
    context.textContent = t.context || "";
    contextPanel.hidden = !t.context;
    const spentIn = t.tokens_in ?? r.tokens_in;
    const spentOut = t.tokens_out ?? r.tokens_out;
    fill(metaBox, meta([
      ["target", target(t)],
      ["priority", t.priority],
      ["agent", t.agent_id ? link("agent", t.agent_id) : "-"],
      ["tries", `${Array.isArray(t.attempts) ? t.attempts.length : t.attempts}/${t.max_attempts}${t.retry_on_failure ? " (retry on failure)" : ""}`],
      ["timeout", t.timeout_s ? `${t.timeout_s} s` : "none"],
      ["created", when(t.created_at)],
      ["started", when(t.started_at)],
      ["finished", when(t.completed_at)],
      ["duration", duration(taskDuration(t))],
      ["tokens", spentIn === null && spentOut === null && t.tokens === null ? "-" :
        `${tokens(t.tokens ?? (spentIn || 0) + (spentOut || 0))} (in ${tokens(spentIn)}, out ${tokens(spentOut)})`],
      ["cost", usd(t.cost_usd ?? r.cost_usd)],
      (r.exit_code ?? null) !== null && ["exit code", String(r.exit_code)],
      (t.error || r.error) && ["error", h("span", { class: "error-text" }, t.error || r.error)],
      r.session_id && ["session", r.session_id],
      t.broadcast_id && ["broadcast", t.broadcast_id],
    ]));
    fill(attemptsBox, attemptsView(t));
    graph(t);
  }

  // Until the task is read, the id in the URL may be a unique prefix of its id.
  const isThis = (taskId) => Boolean(taskId) && (task ? taskId === task.id : taskId.startsWith(id));

  function timelineRows(evs) {
    for (const ev of evs) {
      if (!isThis(ev.task_id) || ev.kind === "task.output") continue;
      timeline.append(h("li", { data: { eventId: ev.id } },
        h("span", { class: "ev-time" }, clock(seconds(ev.at ?? ev.ts))), " ",
        h("span", { class: "ev-kind" }, ev.kind), " ",
        ev.agent_id ? link("agent", ev.agent_id) : ""));
    }
  }

  const load = coalesce(async () => {
    const r = await get(`/tasks/${seg(id)}`);
    task = r.task;
    render(task);
    const running = task.state === "running";
    if (running && !streaming) {
      streaming = true;
      await loadRunningOutput();
    } else if (!running) {
      streaming = false;
      showOutput(task);
    }
    liveMark.hidden = !streaming;
    outputLoaded = true;
  }, 150);

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const r = await post(`/tasks/${seg(id)}/cancel`, {});
      ctx.toast(`task ${r.task.id} ${r.task.state}`);
    } catch (err) {
      ctx.toast(err.message, "error");
      cancel.disabled = false;
    }
  });
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    try {
      const r = await post(`/tasks/${seg(id)}/retry`, {});
      ctx.toast(`task ${r.task.id} ${r.task.state}`);
      if (r.task.id !== id) ctx.go(`#/task/${encodeURIComponent(r.task.id)}`);
    } catch (err) {
      ctx.toast(err.message, "error");
      retry.disabled = false;
    }
  });

  timelineRows(ctx.recentEvents());
  load();
  return {
    events(evs) {
      let again = false;
      const related = new Set([...(task?.depends_on || []), ...(task?.dependents || [])].map((x) => (typeof x === "object" ? x.id : x)));
      for (const ev of evs) {
        if (isThis(ev.task_id)) {
          if (ev.kind === "task.output") {
            const chunk = (ev.data || {}).chunk;
            if (typeof chunk !== "string") continue;
            if (buffered) buffered.push(chunk);
            else if (streaming) appendChunk(chunk);
            else again = true; // (it started running since it was read)
          } else {
            if (NEW_RUN.has(ev.kind)) {
              streaming = false;
              if (ev.kind !== "task.claimed") output.textContent = "";
            }
            again = true;
          }
        } else if (ev.task_id && related.has(ev.task_id) && ev.kind !== "task.output") {
          again = true;
        }
      }
      timelineRows(evs);
      if (again || !outputLoaded) load();
    },
    unmount() {
      load.stop();
    },
  };
}
