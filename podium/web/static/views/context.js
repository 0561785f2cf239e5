// #/context: the shared context documents (key, version, who changed them last) and the
// #context editor that saves one (PUT /api/context/KEY); a change made elsewhere to the entry
// being edited is said, not silently written over.

import { get, put, seg } from "../api.js";
import { field, fill, h, panel } from "../dom.js";
import { when } from "../format.js";
import { coalesce } from "../live.js";

export function mount(root, ctx) {
  const key = h("input", { name: "key", required: true, list: "context-keys", placeholder: "key", class: "wide" });
  const value = h("textarea", { name: "value", rows: "10", placeholder: "the text agents get in front of their prompts" });
  const note = h("p", { class: "note", id: "context-note" });
  const keys = h("datalist", { id: "context-keys" });
  const editor = h("form", { id: "context", class: "stack" }, field("Key", key), field("Value", value), note,
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Save")), keys);
  const list = h("div", { id: "context-entries", class: "entries" });
  const empty = h("p", { class: "empty", hidden: true }, "No shared context yet.");
  fill(root, h("div", { class: "cols" },
    h("div", { class: "col-main" }, panel("Shared context", null, list, empty)),
    h("div", { class: "col-side" }, panel("Edit", null, editor))));

  let entries = new Map();
  let editing = null; // {key, version} loaded into the editor
  let saving = false;

  function edit(entry) {
    key.value = entry.key;
    value.value = entry.value;
    editing = { key: entry.key, version: entry.version };
    note.textContent = `editing version ${entry.version}`;
    value.focus();
  }

  function entryView(e) {
    const editButton = h("button", { type: "button", class: "small" }, "edit");
    editButton.addEventListener("click", () => edit(e));
    return h("article", { class: "entry", data: { key: e.key } },
      h("header", { class: "entry-head" },
        h("code", { class: "strong" }, e.key), " ",
        h("span", { class: "badge", data: { field: "version" } }, `v${e.version}`), " ",
        h("span", { class: "dim" }, `${when(e.updated_at)}${e.updated_by ? ` by ${e.updated_by}` : ""}`),
        editButton),
      h("pre", { class: "text" }, e.value));
  }

  const load = coalesce(async () => {
    const r = await get("/context");
    const list2 = r.context || [];
    entries = new Map(list2.map((e) => [e.key, e]));
    list.replaceChildren(...list2.map(entryView));
    keys.replaceChildren(...list2.map((e) => h("option", { value: e.key })));
    empty.hidden = list2.length > 0;
    const now = editing && entries.get(editing.key);
    if (now && now.version !== editing.version && !saving) {
      note.textContent = `${editing.key} changed to version ${now.version}${now.updated_by ? ` by ${now.updated_by}` : ""} ` +
        `while you edited it: saving writes yours over it (edit it again to start from the new one)`;
      note.classList.add("warn");
    }
  }, 300);

  editor.addEventListener("submit", async (e) => {
    e.preventDefault();
    const k = key.value.trim();
    saving = true;
    try {
      const r = await put(`/context/${seg(k)}`, { value: value.value });
      editing = { key: k, version: r.entry.version };
      note.textContent = `saved: ${k} is at version ${r.entry.version}`;
      note.classList.remove("warn");
      ctx.toast(`context ${k} v${r.entry.version}`);
    } catch (err) {
      note.textContent = err.message;
      note.classList.add("warn");
    } finally {
      saving = false;
    }
  });
  load();
  return {
    events(evs) {
      if (evs.some((e) => e.kind === "context.set")) load();
    },
    unmount() {
      load.stop();
    },
  };
}
