// HTTP and server-sent events to /api/v1 on this origin, with the tab's bearer token.

const API = "/api/v1";
const TOKEN_KEY = "chat-api.playground.token";

/** A refused request, carrying its RFC 9457 problem. */
export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
}

/** The bearer token kept for this tab, or "". */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** Keeps a token for this tab; an empty one forgets it. */
export function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function requestHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  const problem = body && typeof body === "object" ? body : {};
  return new ApiError({ status: response.status, title: response.statusText, ...problem });
}

/** One JSON request; resolves to the body (null for 204), throws ApiError when refused. */
export async function api(method, path, body) {
  const init = { method, headers: requestHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (!response.ok) throw await problemOf(response);
  return response.status === 204 ? null : response.json();
}

/** Posts a turn with `stream: true` and yields its reply's events; throws ApiError if refused. */
export function streamTurn(conversationId, body, signal) {
  return streamPost(`/conversations/${conversationId}/messages`, body, signal);
}

/** Asks for a new reply beside `replyId` with `stream: true` and yields its events. */
export function streamRegeneration(conversationId, replyId, body, signal) {
  return streamPost(`/conversations/${conversationId}/messages/${replyId}/regenerate`, body, signal);
}

async function* streamPost(path, body, signal) {
  const response = await fetch(API + path, {
    method: "POST",
    headers: requestHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await problemOf(response);
  yield* readEvents(response.body);
}

/** The URL of a download under /api/v1 (it needs the bearer token, if any: see `download`). */
export function apiUrl(path) {
  return API + path;
}

/** Fetches a download with the tab's token; resolves to its body as a Blob. */
export async function download(url) {
  const response = await fetch(url, { headers: requestHeaders({ Accept: "*/*" }) });
  if (!response.ok) throw await problemOf(response);
  return response.blob();
}

/** An EventSource on a conversation's running (or latest) reply; `params` go in the query. */
export function replyEvents(conversationId, params) {
  const query = params.toString();
  return new EventSource(`${API}/conversations/${conversationId}/stream${query ? `?${query}` : ""}`);
}

// Server-sent events from a fetch body, parsed as the HTML standard says EventSource does.
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  // A lone \r at the end of the buffer may be the first half of \r\n: wait for more.
  const lineEnd = /\r\n|\r(?!$)|\n/;
  let buffer = "";
  let type = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its blank line is incomplete: dropped
      buffer += value;
      let match;
      while ((match = lineEnd.exec(buffer)) !== null) {
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === "") {
          if (data.length) yield { event: type || "message", data: data.join("\n") };
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
        if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
        if (field === "event") type = fieldValue;
        else if (field === "data") data.push(fieldValue);
        // `id` and `retry` matter for reconnecting, which EventSource does for attach.
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // stopped early (after `done`, or aborted): hang up
  }
}
