// The page's controls: the add-task and broadcast forms (in dialogs), buttons that ask once
// more before doing something that cannot be undone, and the toasts that say what happened.

import { post } from "./api.js";
import { field, h } from "./dom.js";

/** A button that does ``action`` on its second click (the first one asks ``question``);
 * ``small``: the size of the buttons in table rows. */
export function twoClick(label, question, action, { small = false } = {}) {
  const button = h("button", { type: "button", class: ["danger", small ? "small" : ""] }, label);
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = question;
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("armed");
      }, 3000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("armed");
    button.disabled = true;
    try {
      await action();
    } catch (err) {
      toast(err.message, "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Say something for a few seconds at the bottom of the page (errors stay longer). */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3500);
}

/** Ids typed in one field, separated by spaces or commas. */
export function ids(text) {
  return String(text || "").split(/[\s,]+/).filter(Boolean);
}

function formError(form) {
  let el = form.querySelector(".form-error");
  if (!el) {
    el = h("p", { class: "form-error", role: "alert" });
    form.append(el);
  }
  return el;
}

/** Run ``submit(form)``; show its error in the form, or close the dialog when it went well. */
async function submitting(form, dialog, submit) {
  const error = formError(form);
  error.textContent = "";
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await submit();
    form.reset();
    dialog.close();
  } catch (err) {
    error.textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

function dialogShell(id, title, form) {
  const close = h("button", { type: "button", class: "ghost", "aria-label": "close" }, "✕");
  const dialog = h("dialog", { id }, h("header", { class: "dialog-head" }, h("h2", {}, title), close), form);
  close.addEventListener("click", () => dialog.close());
  return dialog;
}

/** The #add-task form in its dialog: prompt, agent or role, priority, dependencies, timeout. */
export function addTaskDialog(ctx) {
  const form = h("form", { id: "add-task", class: "stack" },
    field("Prompt", h("textarea", { name: "prompt", rows: "5", required: true,
      placeholder: "a shell command for shell agents, an instruction for AI agents" })),
    h("div", { class: "row2" },
      field("Agent", h("input", { name: "agent", list: "agent-names", placeholder: "any" })),
      field("Role", h("input", { name: "role", list: "role-names", placeholder: "any" }))),
    h("div", { class: "row3" },
      field("Priority", h("select", { name: "priority" },
        h("option", { value: "high" }, "high"),
        h("option", { value: "normal", selected: true }, "normal"),
        h("option", { value: "low" }, "low"))),
      field("Timeout (s)", h("input", { name: "timeout_s", type: "number", min: "0", step: "any", placeholder: "none" })),
      field("Depends on", h("input", { name: "depends_on", placeholder: "task ids" }))),
    field("Context", h("textarea", { name: "context", rows: "2", placeholder: "optional, put in front of the prompt" })),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Add task")));
  const dialog = dialogShell("add-task-dialog", "New task", form);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitting(form, dialog, async () => {
      const v = (name) => form.elements[name].value.trim();
      const timeout = v("timeout_s");
      const r = await post("/tasks", {
        prompt: form.elements.prompt.value,
        agent: v("agent") || null,
        role: v("role") || null,
        priority: v("priority") || "normal",
        depends_on: ids(v("depends_on")),
        timeout_s: timeout === "" ? null : Number(timeout),
        context: form.elements.context.value || null,
      });
      toast(`task ${r.task.id} ${r.task.state}`);
      ctx.go(`#/task/${encodeURIComponent(r.task.id)}`);
    });
  });
  return dialog;
}

/** The #broadcast form in its dialog: one task for every live agent. */
export function broadcastDialog(ctx) {
  const form = h("form", { id: "broadcast", class: "stack" },
    field("Prompt", h("textarea", { name: "prompt", rows: "4", required: true })),
    field("Context", h("textarea", { name: "context", rows: "2", placeholder: "optional" })),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Broadcast")));
  const dialog = dialogShell("broadcast-dialog", "Broadcast to every live agent", form);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitting(form, dialog, async () => {
      const r = await post("/broadcast", {
        prompt: form.elements.prompt.value,
        context: form.elements.context.value || null,
      });
      toast(`broadcast: ${(r.tasks || []).length} task(s) queued`);
      ctx.go("#/queue");
    });
  });
  return dialog;
}
