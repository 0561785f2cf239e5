// #/costs: tokens and cost over time (a bar per bucket) and per agent, role and backend.

import { get } from "../api.js";
import { field, fill, h, panel, row, table } from "../dom.js";
import { tokens, usd } from "../format.js";
import { timeBars, nameBars } from "../chart.js";
import { coalesce } from "../live.js";

const BUCKETS = [["60", "minute"], ["600", "10 minutes"], ["3600", "hour"], ["86400", "day"]];
const SPENDING = new Set(["task.completed", "task.failed", "task.cancelled"]);

function spendTable(id, key, rows) {
  const t = table({ id }, [key, "tasks", "tokens in", "tokens out", "cost"]);
  t.body.replaceChildren(...rows.map((r) => row({}, [
    String(r[key] ?? "(none)"), [String(r.tasks ?? 0), { class: "num" }],
    [tokens(r.tokens_in), { class: "num" }], [tokens(r.tokens_out), { class: "num" }], [usd(r.cost_usd), { class: "num" }],
  ])));
  return t.el;
}

export function mount(root) {
  const bucket = h("select", { name: "bucket_s" }, BUCKETS.map(([v, l]) => h("option", { value: v, selected: v === "3600" }, l)));
  const metric = h("select", { name: "metric" }, ["cost", "tokens", "tasks"].map((m) => h("option", { value: m }, m)));
  const split = h("select", { name: "split" }, h("option", { value: "agent" }, "agent"), h("option", { value: "role" }, "role"),
    h("option", { value: "" }, "nothing"));
  const chartBox = h("div", { id: "cost-chart", class: "chart-box" });
  const total = h("div", { id: "cost-total", class: "totals" });
  const byAgent = h("div", { id: "cost-agents" });
  const byRole = h("div", { id: "cost-roles" });
  const tables = h("div", { id: "cost-tables" });
  fill(root,
    panel("Spend over time", [field("show", metric), field("per", bucket), field("by", split)], total, chartBox),
    h("div", { class: "cols even" },
      h("div", {}, panel("Per agent", null, byAgent)),
      h("div", {}, panel("Per role", null, byRole))),
    panel("Details", null, tables));

  const value = () => ({ cost: (p) => p.cost_usd, tokens: (p) => p.tokens, tasks: (p) => p.tasks })[metric.value];
  const label = () => ({ cost: usd, tokens, tasks: (n) => String(Math.round(n)) })[metric.value];
  let series = null;
  let report = null;
  let first = true;

  function draw() {
    const v = value();
    const l = label();
    if (series) {
      const groups = split.value === "agent" ? series.by_agent : split.value === "role" ? series.by_role : null;
      const stacked = groups && Object.keys(groups).length ?
        Object.entries(groups).map(([name, points]) => ({ name: name || "(no role)", points })) :
        [{ name: "all", points: series.points || [] }];
      fill(chartBox, timeBars(stacked, series.bucket_s || Number(bucket.value), v, l));
    }
    if (!report) return;
    const t = report.total || {};
    fill(total, h("span", { class: "big" }, usd(t.cost_usd)), " ",
      h("span", { class: "dim" }, `${tokens((t.tokens_in || 0) + (t.tokens_out || 0))} tokens over ${t.tasks ?? 0} tasks, ${t.agents ?? 0} agents`));
    const spend = (r) => ({ cost: r.cost_usd || 0, tokens: (r.tokens_in || 0) + (r.tokens_out || 0), tasks: r.tasks || 0 })[metric.value];
    fill(byAgent, nameBars((report.agents || []).map((r) => [r.agent, spend(r)]), l));
    fill(byRole, nameBars((report.roles || []).map((r) => [r.role, spend(r)]), l));
    fill(tables, h("div", { class: "cols even" },
      h("div", {}, spendTable("cost-agent-table", "agent", report.agents || [])),
      h("div", {}, spendTable("cost-role-table", "role", report.roles || []),
        spendTable("cost-backend-table", "backend", report.backends || []))));
  }

  const load = coalesce(async () => {
    [series, report] = await Promise.all([get("/costs/series", { bucket_s: bucket.value }), get("/costs")]);
    const t = report.total || {};
    if (first && !t.cost_usd) metric.value = (t.tokens_in || t.tokens_out) ? "tokens" : "tasks";
    first = false;
    draw();
  }, 2000);
  bucket.addEventListener("change", () => load());
  metric.addEventListener("change", draw);
  split.addEventListener("change", draw);
  load();
  return {
    events(evs) {
      if (evs.some((e) => SPENDING.has(e.kind))) load();
    },
    unmount() {
      load.stop();
    },
  };
}
