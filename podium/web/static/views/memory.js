// #/memory: search what the team remembers (GET /api/memory/search: hybrid, keyword or vector
// ranking, as 'podium memory search'), each hit with its score, provenance and snippet; what is
// remembered, by which model and where (GET /api/memory/stats) above. The query is kept in the
// hash (#/memory?q=...), so a search can be linked to and reloaded.

import { get } from "../api.js";
import { field, fill, h, link, panel, row, table } from "../dom.js";
import { short, when } from "../format.js";
import { coalesce } from "../live.js";

const KINDS = ["", "task", "note", "context"];
const MODES = ["hybrid", "keyword", "vector"];
const FIELDS = ["q", "k", "kind", "role", "since", "mode"];
const DEFAULT_K = "10";

function score(x) {
  return typeof x === "number" ? x.toFixed(3) : "-";
}

function kib(bytes) {
  return `${((bytes || 0) / 1024).toFixed(1)} KiB`;
}

/** How the hit was ranked: its keyword share and cosine, and its places in each ranking. */
function parts(hit) {
  const out = [];
  if (hit.keyword !== null && hit.keyword !== undefined) {
    out.push(`keyword ${hit.keyword.toFixed(2)}${hit.keyword_rank ? ` #${hit.keyword_rank}` : ""}`);
  }
  if (hit.vector !== null && hit.vector !== undefined) {
    out.push(`vector ${hit.vector.toFixed(2)}${hit.vector_rank ? ` #${hit.vector_rank}` : ""}`);
  }
  return out.join(" · ") || "-";
}

/** Where a memory came from: its task and agent (links), role, context key, who added it,
 * when; and how it was ranked. */
function provenance(hit) {
  const meta = hit.meta || {};
  const bits = [];
  const sep = () => (bits.length ? " · " : null);
  if (hit.task_id) bits.push(sep(), link("task", hit.task_id, null, { data: { field: "task" } }));
  if (hit.agent_id) bits.push(sep(), "agent ", link("agent", hit.agent_id, null, { data: { field: "agent" } }));
  if (hit.role) bits.push(sep(), `role ${hit.role}`);
  if (hit.kind === "context" && meta.key !== undefined) bits.push(sep(), h("code", {}, String(meta.key)), ` v${meta.version ?? "?"}`);
  if (meta.state) bits.push(sep(), String(meta.state));
  bits.push(sep(), `by ${hit.source}`);
  bits.push(sep(), h("span", { data: { field: "when" } }, when(hit.created_at)));
  bits.push(sep(), h("span", { data: { field: "ranked" } }, parts(hit)));
  bits.push(sep(), h("code", {}, hit.id));
  return h("div", { class: "memory-prov dim" }, bits);
}

function hitRow(hit) {
  return row({ data: { memory: hit.id } }, [
    [score(hit.score), { class: "num strong", data: { field: "score" } }],
    [h("span", { class: `badge kind-${hit.kind}` }, hit.kind), { data: { field: "kind" } }],
    [[h("div", { class: "memory-title", data: { field: "title" }, title: hit.title }, short(hit.title, 140)),
      h("div", { class: "memory-snippet", data: { field: "snippet" } }, hit.snippet), provenance(hit)],
    { class: "memory-main" }],
  ]);
}

function statsView(s) {
  const kinds = Object.entries(s.by_kind || {}).sort().map(([k, n]) => `${k} ${n}`).join(", ") || "none";
  const pairs = [
    ["memories", h("span", { data: { field: "memories" } }, `${s.memories ?? 0}`, h("span", { class: "dim" }, ` (${kinds})`))],
    ["model", h("span", { data: { field: "model" } }, `${s.model_id || "?"}`,
      h("span", { class: "dim" }, ` (${s.embedder || "?"}${s.dimension ? `, ${s.dimension} dimensions` : ""})`))],
    ["embedded", h("span", { data: { field: "embedded" } }, `${s.embedded ?? 0}`,
      s.not_embedded ? h("span", { class: "warn" }, ` · ${s.not_embedded} not yet (the next search embeds them)`) : null)],
    ["vector store", h("code", { data: { field: "store" } }, s.vector_store || "?")],
    ["size", `text ${kib(s.text_bytes)}, vectors ${kib(s.vector_bytes)}`],
    ["indexing", `${s.indexing || "?"} (remembered up to event ${s.cursor ?? 0} of ${s.last_event_id ?? 0})` +
      `; indexer on this host: ${s.indexer_pid ? `pid ${s.indexer_pid}` : "none"}`],
  ];
  const other = Object.entries(s.other_models || {});
  if (other.length) pairs.push(["other models", `${other.map(([m, n]) => `${n} by ${m}`).join(", ")} ('podium memory reindex' embeds them with this one)`]);
  return h("dl", { class: "meta" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function mount(root, ctx, params, query) {
  const q = h("input", { name: "q", type: "search", class: "wide", required: true, placeholder: "what to look for", "aria-label": "search memory" });
  const form = h("form", { id: "memory-search", class: "inline filters" },
    field("search", q),
    field("k", h("input", { name: "k", type: "number", min: "1", max: "100", value: DEFAULT_K, class: "narrow" })),
    field("kind", h("select", { name: "kind" }, KINDS.map((k) => h("option", { value: k }, k || "any")))),
    field("role", h("input", { name: "role", list: "role-names", class: "mid" })),
    field("since", h("input", { name: "since", class: "mid", placeholder: "7d, 2026-01-31" })),
    field("rank by", h("select", { name: "mode" }, MODES.map((m) => h("option", { value: m }, m)))),
    h("button", { type: "submit", class: "primary" }, "Search"));
  for (const k of FIELDS) if (query.get(k)) form.elements[k].value = query.get(k);
  const stats = h("div", { id: "memory-stats" });
  const list = table({ id: "memory-hits" }, ["score", "kind", "memory"]);
  const shown = h("span", { class: "count" }, "");
  const note = h("p", { class: "note", id: "memory-note" }, "Search by keywords and meaning: finished tasks, notes and shared context.");
  const error = h("p", { class: "error-text", id: "memory-error", hidden: true });
  fill(root,
    panel("Memory", null, stats),
    panel(["Search ", shown], null, form, error, note, list.el));
  list.el.hidden = true;

  let token = 0; // a newer search's answer wins over an older one's
  const rows = new Map();

  const loadStats = coalesce(async () => {
    try {
      fill(stats, statsView(await get("/memory/stats")));
    } catch (err) {
      fill(stats, h("p", { class: "error-text" }, err.message));
    }
  }, 1000);

  const filters = () => {
    const f = {};
    for (const k of FIELDS) f[k] = String(form.elements[k].value).trim();
    return f;
  };

  async function search() {
    const f = filters();
    if (!f.q) return;
    const mine = ++token;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    note.textContent = "searching…";
    error.hidden = true;
    try {
      const r = await get("/memory/search", f);
      if (mine !== token) return;
      const hits = r.hits || [];
      rows.clear();
      list.body.replaceChildren(...hits.map((hit) => {
        const tr = hitRow(hit);
        rows.set(hit.id, tr);
        return tr;
      }));
      list.el.hidden = hits.length === 0;
      shown.textContent = String(hits.length);
      note.textContent = hits.length ? `best first, ranked by ${f.mode === "hybrid" ? "keywords and meaning" : f.mode}` : "No memory matches.";
      loadStats(); // (a search embeds what was new)
    } catch (err) {
      if (mine !== token) return;
      error.textContent = err.message;
      error.hidden = false;
      note.textContent = "";
    } finally {
      if (mine === token) button.disabled = false;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const qs = new URLSearchParams(Object.entries(filters()).filter(([k, v]) => v && !(k === "k" && v === DEFAULT_K) && !(k === "mode" && v === "hybrid")));
    ctx.replaceHash(`#/memory${qs.toString() ? `?${qs}` : ""}`);
    search();
  });
  loadStats();
  if (query.get("q")) search(); else q.focus();

  return {
    events(evs) {
      let changed = false;
      for (const ev of evs) {
        if (ev.kind === "memory.added") changed = true;
        if (ev.kind === "memory.forgotten") {
          changed = true;
          for (const id of (ev.data || {}).memory_ids || []) {
            rows.get(id)?.remove();
            rows.delete(id);
          }
          shown.textContent = String(rows.size);
        }
      }
      if (changed) loadStats();
    },
    unmount() {
      loadStats.stop();
      token += 1;
    },
  };
}
