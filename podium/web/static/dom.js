// Building the DOM safely: every text goes in as a Text node (textContent), never as HTML.
// h("tr", {data: {task: id}}, h("td", {}, prompt)) — strings and numbers become text nodes.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "data") {
      for (const [k, v] of Object.entries(value)) {
        if (v !== null && v !== undefined) el.dataset[k] = String(v);
      }
    } else if (key === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "style") {
      for (const [k, v] of Object.entries(value)) el.style.setProperty(k, String(v));
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element with attributes (see ``apply``) and children (nodes or text). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Replace every child of ``el`` with ``children``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link to a view of the page (an id is put in the hash URL-encoded, never as markup). */
export function link(view, id, text, attrs = {}) {
  const href = id === undefined || id === null ? `#/${view}` : `#/${view}/${encodeURIComponent(id)}`;
  return h("a", { href, ...attrs }, text ?? id);
}

/** A state as a coloured pill (the colour comes from the state name, see app.css). */
export function pill(state, attrs = {}) {
  return h("span", { class: `pill st-${cssName(state)}`, ...attrs }, state ?? "-");
}

/** A string usable in a class name (state names are plain words; anything else is dropped). */
export function cssName(text) {
  return String(text ?? "none").replace(/[^a-z0-9_-]/gi, "");
}

/** A table with a header row and a body whose rows the caller fills. */
export function table(attrs, headers) {
  const body = h("tbody");
  const el = h("table", { class: "grid", ...attrs },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body);
  return { el, body };
}

/** A row of cells; a cell is a node, text, or [content, attrs]. */
export function row(attrs, cells) {
  return h("tr", attrs, cells.map((c) => (Array.isArray(c) ? h("td", c[1], c[0]) : h("td", {}, c))));
}

/** A panel with a title bar (extra nodes at its right) and a body. */
export function panel(title, extra, ...body) {
  return h("section", { class: "panel" },
    h("header", { class: "panel-head" }, h("h2", {}, title), h("div", { class: "panel-tools" }, extra)),
    h("div", { class: "panel-body" }, body));
}

/** A label with a form control in it. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control,
    hint ? h("span", { class: "field-hint" }, hint) : null);
}
