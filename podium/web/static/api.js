// The JSON API under /api: reads, and writes carrying the CSRF header from /api/session.
// The cookie set by the printed link authenticates every request (same origin only).

let csrf = null;

/** An API answer that was not 2xx: ``status`` and the server's one-line ``message``. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    const err = new ApiError(response.status, message);
    if (response.status === 401) document.dispatchEvent(new CustomEvent("podium:unauthorized"));
    throw err;
  }
  return body;
}

/** GET ``path`` (under /api), with query ``params`` (empty values left out). */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") query.set(k, String(v));
  }
  const qs = query.toString();
  const response = await fetch(`/api${path}${qs ? `?${qs}` : ""}`, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  return answer(response);
}

/** POST/PUT/DELETE ``body`` as JSON to ``path`` (under /api). */
export async function send(method, path, body = {}) {
  const response = await fetch(`/api${path}`, {
    method,
    credentials: "same-origin",
    headers: {
      Accept: "application/json",
      "Content-Type": "application/json",
      "X-Podium-CSRF": csrf ?? "",
    },
    body: JSON.stringify(body),
  });
  return answer(response);
}

export const post = (path, body) => send("POST", path, body);
export const put = (path, body) => send("PUT", path, body);

/** The session (csrf, version, store); keeps the CSRF token for ``send``. */
export async function session() {
  const s = await get("/session");
  csrf = s.csrf;
  return s;
}

/** Task and agent ids in a path segment. */
export const seg = (id) => encodeURIComponent(id);
