// How things read on the page: ages, times, durations, tokens and money (as podium/render.py
// says them on a terminal: "3s", "2m", "5h", "2d").

/** Unix seconds from what the API gives: a number of seconds or an ISO 8601 string. */
export function seconds(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t / 1000;
}

/** How long ``s`` seconds is, in its largest whole unit. */
export function age(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  s = Math.max(0, s);
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size) return `${Math.floor(s / size)}${unit}`;
  }
  return `${Math.floor(s)}s`;
}

/** How long ago a time was, from the browser's clock ("-" for none). */
export function ago(value) {
  const t = seconds(value);
  return t === null ? "-" : age(Date.now() / 1000 - t);
}

/** A local time to the second. */
export function clock(value) {
  const t = seconds(value);
  if (t === null) return "-";
  const d = new Date(t * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A local date and time, and how long ago. */
export function when(value) {
  const t = seconds(value);
  if (t === null) return "-";
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${clock(t)} (${age(Date.now() / 1000 - t)} ago)`;
}

/** A duration given in seconds: "850 ms", "12.3 s", "4m 05s". */
export function duration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`
    : `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** A count of tokens: 950, 12.3k, 4.5M. */
export function tokens(n) {
  if (n === null || n === undefined) return "-";
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

/** Dollars: "$0.0123", "$4.56", "-" for none. */
export function usd(x) {
  if (x === null || x === undefined) return "-";
  if (x === 0) return "$0";
  return x < 0.01 ? `$${x.toFixed(4)}` : `$${x.toFixed(2)}`;
}

/** ``text`` on one line (newlines shown as ⏎), cut to ``width`` characters with an …. */
export function short(text, width = 60) {
  const line = String(text ?? "").replace(/\n/g, " ⏎ ");
  return line.length <= width ? line : `${line.slice(0, width - 1)}…`;
}

/** Who may take a task: an agent, role:NAME, or * (anyone). */
export function target(task) {
  if (task.target_agent) return task.target_agent;
  return task.target_role ? `role:${task.target_role}` : "*";
}

/** A task's duration in seconds from what the API gives (duration_s, duration_ms or times). */
export function taskDuration(task) {
  if (typeof task.duration_s === "number") return task.duration_s;
  const r = task.result || {};
  if (typeof r.duration_ms === "number") return r.duration_ms / 1000;
  const a = seconds(task.started_at);
  const b = seconds(task.completed_at);
  return a !== null && b !== null ? b - a : null;
}
