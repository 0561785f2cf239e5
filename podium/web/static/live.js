// The live event stream: one WebSocket from the page's cursor. Frames are
// {"rows": [[id, at, kind, agent_id, task_id, data], ...], "cursor": N} (an event as a row, in
// the order of podium/web/payloads.py EVENT_ROW: fewer bytes than objects), turned back into
// event objects by frameEvents; an event at or below the cursor was seen already and is
// dropped (ids only grow), so none is applied twice. When the socket closes the page reconnects
// with after=cursor (back-off 100 ms doubling up to 2 s), and the server sends what it missed.

const MAX_BACKOFF_MS = 2000;
const FIRST_BACKOFF_MS = 100;

/** The events of a frame (its text parsed), as objects {id, at, kind, agent_id, task_id, data}
 * like /api/events gives them (without the ISO ``ts``); [] for a frame that is not one. */
export function frameEvents(frame) {
  const rows = frame && Array.isArray(frame.rows) ? frame.rows : [];
  const events = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    events[i] = { id: r[0], at: r[1], kind: r[2], agent_id: r[3], task_id: r[4], data: r[5] };
  }
  return events;
}

export class Live {
  constructor() {
    this.cursor = 0;
    this.socket = null;
    this.backoff = FIRST_BACKOFF_MS;
    this.handlers = new Set();
    this.stateHandlers = new Set();
    this.state = "connecting";
    this.connects = 0;
    this.timer = null;
  }

  /** Call ``fn(events)`` with every batch of new events (oldest first); returns an unsubscribe. */
  on(fn) {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  /** Call ``fn(state)`` when the connection's state changes ("live" / "reconnecting"). */
  onState(fn) {
    this.stateHandlers.add(fn);
    fn(this.state);
  }

  /** Apply events from any source (the first load, or a frame): only those after the cursor. */
  feed(events) {
    const fresh = [];
    for (const ev of events) {
      if (typeof ev.id === "number" && ev.id > this.cursor) {
        fresh.push(ev);
        this.cursor = ev.id;
      }
    }
    if (!fresh.length) return;
    for (const fn of this.handlers) {
      try {
        fn(fresh);
      } catch (err) {
        console.error("event handler failed", err);
      }
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    for (const fn of this.stateHandlers) fn(state);
  }

  /** Open the socket from ``this.cursor`` (and again whenever it closes). */
  connect() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/api/events/ws?after=${this.cursor}`);
    this.socket = ws;
    ws.onopen = () => {
      this.connects += 1;
      this.backoff = FIRST_BACKOFF_MS;
      this.setState("live");
    };
    ws.onmessage = (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.feed(frameEvents(frame));
    };
    ws.onclose = () => {
      if (this.socket !== ws) return;
      this.socket = null;
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
    };
    ws.onerror = () => ws.close();
  }
}

/** A re-fetch waits at least this many times as long as the last one took: a busy server
 * (answers slow to come) is asked less often, by every page alike. */
const BACK_OFF = 4;

/**
 * ``fn`` run on demand, never twice at once and at most once per ``gapMs`` (or BACK_OFF times
 * its last duration, if longer): pokes that come while it runs or waits make exactly one more
 * run afterwards. This is how views re-fetch what an event names without a storm of requests
 * during a burst of events.
 */
export function coalesce(fn, gapMs = 250) {
  let running = false;
  let again = false;
  let last = -Infinity;
  let took = 0;
  let timer = null;
  let stopped = false;
  async function run() {
    timer = null;
    if (stopped) return;
    running = true;
    again = false;
    last = performance.now();
    try {
      await fn();
    } catch (err) {
      console.error(err);
    } finally {
      took = performance.now() - last;
      running = false;
      if (again && !stopped) schedule();
    }
  }
  function schedule() {
    if (timer !== null) return;
    const wait = Math.max(0, last + Math.max(gapMs, BACK_OFF * took) - performance.now());
    timer = setTimeout(run, wait);
  }
  const poke = () => {
    if (running) {
      again = true;
    } else {
      schedule();
    }
  };
  poke.stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  return poke;
}
