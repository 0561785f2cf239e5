// Task states as the page needs them: which are final, and the state an event leaves a task in
// (so that a row shows it at once, before the row is read again).

/** The states a task ends in. */
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

/** The state a task is in after an event of it (null: the event does not say). */
export function stateAfter(ev) {
  switch (ev.kind) {
    case "task.queued": case "task.requeued": return "queued";
    case "task.claimed": return "running";
    case "task.blocked": return "blocked";
    case "task.completed": return "completed";
    case "task.failed": return "failed";
    case "task.cancelled": return "cancelled";
    case "task.retried": return (ev.data || {}).state || "queued";
    default: return null;
  }
}
