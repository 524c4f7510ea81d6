// The chat-api playground: plain DOM, no framework, no build. Every piece of data reaches
// the page through textContent or text nodes, never as HTML.
"use strict";

const API = "/api/v1";
const SELECTED_KEY = "chat-api.playground.conversation";
const TOKEN_KEY = "chat-api.playground.token";
// Reconnections in a row that bring no event before an attached stream is given up.
const MAX_EMPTY_RECONNECTS = 3;
// With a token, how long to wait before reopening a dropped stream with a new ticket.
const RECONNECT_DELAY_MS = 1000;

const $ = (id) => document.getElementById(id);

const state = {
  conversationId: null,
  busy: false, // a reply is streaming into the selected conversation
  abort: null, // AbortController of a POST stream
  source: null, // EventSource attached to a running reply
};

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
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

async function api(method, path, body) {
  const init = { method, headers: requestHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (!response.ok) throw await problemOf(response);
  return response.status === 204 ? null : response.json();
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

// ---------------------------------------------------------------- formatting

function usd(value) {
  const amount = Number(value || 0);
  // Money is exact to 1e-8; show that, trimmed, but keep cents.
  return `$${amount.toFixed(8).replace(/(\.\d\d\d*?)0+$/, "$1")}`;
}

function describeError(error) {
  if (error instanceof ApiError) {
    const { problem } = error;
    const fields = (problem.errors || [])
      .map((item) => `${(item.loc || []).join(".")}: ${item.msg}`)
      .join("; ");
    const code = problem.code ? ` (${problem.code})` : "";
    return `${error.message}${fields ? ` — ${fields}` : ""}${code}`;
  }
  if (error instanceof TypeError) return `Network error: ${error.message}`;
  return String(error && error.message ? error.message : error);
}

function showError(error) {
  $("error-text").textContent = typeof error === "string" ? error : describeError(error);
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// ---------------------------------------------------------------- conversations

async function loadConversations() {
  let page;
  try {
    page = await api("GET", "/conversations?limit=50");
  } catch (error) {
    showError(error);
    return;
  }
  const list = $("conversation-list");
  list.replaceChildren(...page.items.map(conversationItem));
  $("conversation-list-empty").hidden = page.items.length > 0;
}

function conversationItem(conversation) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.conversationId = conversation.id;
  button.setAttribute("aria-current", String(conversation.id === state.conversationId));
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = conversation.title || "Untitled";
  const summary = document.createElement("span");
  summary.className = "summary";
  summary.textContent = `${conversation.message_count} messages · ${usd(conversation.total_cost_usd)}`;
  button.append(title, summary);
  button.addEventListener("click", () => selectConversation(conversation.id));
  item.append(button);
  return item;
}

function markSelected() {
  for (const button of $("conversation-list").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.conversationId === state.conversationId));
  }
}

async function createConversation(event) {
  event.preventDefault();
  hideError();
  const title = $("new-title").value.trim();
  try {
    const conversation = await api("POST", "/conversations", title ? { title } : {});
    $("new-title").value = "";
    await selectConversation(conversation.id);
    await loadConversations();
    $("message-input").focus();
  } catch (error) {
    showError(error);
  }
}

async function selectConversation(id, { forgetIfMissing = false } = {}) {
  detachStreams();
  hideError();
  state.conversationId = id;
  localStorage.setItem(SELECTED_KEY, id);
  markSelected();
  let conversation;
  let feedback;
  try {
    [conversation, feedback] = await Promise.all([
      api("GET", `/conversations/${id}`),
      api("GET", `/conversations/${id}/feedback?limit=100`).catch(() => ({ items: [] })),
    ]);
  } catch (error) {
    if (forgetIfMissing && error instanceof ApiError && error.problem.status === 404) {
      localStorage.removeItem(SELECTED_KEY);
      state.conversationId = null;
      renderEmpty();
      return;
    }
    showError(error);
    return;
  }
  if (state.conversationId !== id) return; // another was picked meanwhile
  renderConversation(conversation, feedback.items);
  const running = conversation.messages.findLast(
    (message) => message.role === "assistant" && message.status === "in_progress",
  );
  if (running) attach(id, messageElement(running.id));
}

async function refreshConversation() {
  if (state.conversationId) await selectConversation(state.conversationId);
  await loadConversations();
  if ($("usage-panel").open) await loadUsage();
}

// ---------------------------------------------------------------- spend

const SVG = "http://www.w3.org/2000/svg";
const USAGE_DAYS = 30;
const BAR_HEIGHT = 16;
const BAR_GAP = 6;
const LABEL_WIDTH = 78;
const VALUE_WIDTH = 66;
const CHART_WIDTH = 260;

// Spend per day and per model from GET /usage, drawn as bars (SVG built node by node: the
// data, model names included, only ever becomes text).
async function loadUsage() {
  const since = new Date(Date.now() - USAGE_DAYS * 86_400_000).toISOString();
  const query = `from=${encodeURIComponent(since)}`;
  try {
    const [byDay, byModel] = await Promise.all([
      api("GET", `/usage?group_by=day&${query}`),
      api("GET", `/usage?group_by=model&${query}`),
    ]);
    const days = [...byDay.items].sort((a, b) => a.key.localeCompare(b.key));
    drawBars($("usage-by-day"), days);
    drawBars($("usage-by-model"), byModel.items);
    $("usage-total").textContent = `Total: ${usd(byModel.total_cost_usd)}`;
  } catch (error) {
    showError(error);
  }
}

function drawBars(svg, items) {
  svg.replaceChildren();
  const largest = Math.max(0, ...items.map((item) => Number(item.cost_usd || 0)));
  const rows = Math.max(items.length, 1);
  svg.setAttribute("viewBox", `0 0 ${CHART_WIDTH} ${rows * (BAR_HEIGHT + BAR_GAP)}`);
  if (!items.length) {
    svg.append(svgText("No spend yet", 0, BAR_HEIGHT - 4, "usage-empty"));
    return;
  }
  const room = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH - 4;
  items.forEach((item, row) => {
    const y = row * (BAR_HEIGHT + BAR_GAP);
    const cost = Number(item.cost_usd || 0);
    const group = document.createElementNS(SVG, "g");
    group.classList.add("usage-bar");
    group.dataset.key = item.key;
    group.dataset.cost = String(item.cost_usd);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${item.key}: ${usd(cost)}, ${item.requests} requests`;
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(LABEL_WIDTH));
    bar.setAttribute("y", String(y));
    bar.setAttribute("height", String(BAR_HEIGHT));
    // A bar for every row that has spend, however small next to the largest.
    const width = largest > 0 ? Math.max(1, (cost / largest) * room) : 0;
    bar.setAttribute("width", String(width));
    const value = svgText(usd(cost), LABEL_WIDTH + width + 4, y + BAR_HEIGHT - 4, "usage-value");
    group.append(title, svgText(item.key, 0, y + BAR_HEIGHT - 4, "usage-label"), bar, value);
    svg.append(group);
  });
}

function svgText(content, x, y, className) {
  const text = document.createElementNS(SVG, "text");
  text.setAttribute("x", String(x));
  text.setAttribute("y", String(y));
  text.classList.add(className);
  text.textContent = content.length > 12 ? `${content.slice(0, 11)}…` : content;
  return text;
}

function renderEmpty() {
  $("conversation-title").textContent = "Pick or create a conversation";
  $("conversation-model").textContent = "";
  $("messages").replaceChildren();
  renderTotals({ message_count: 0, total_tokens: 0, total_cost_usd: 0 });
  setBusy(false);
}

function renderTotals(conversation) {
  $("conversation-messages").textContent = String(conversation.message_count);
  $("conversation-tokens").textContent = String(conversation.total_tokens);
  $("conversation-cost").textContent = usd(conversation.total_cost_usd);
}

function renderConversation(conversation, feedbackItems) {
  $("conversation-title").textContent = conversation.title || "Untitled";
  const model = [conversation.provider, conversation.model].filter(Boolean).join(" / ");
  $("conversation-model").textContent = model ? `Model: ${model}` : "Model: service default";
  renderTotals(conversation);
  $("messages").replaceChildren(...conversation.messages.map(messageView));
  // Feedback is listed newest first: the first vote seen for a message is its current one.
  const voted = new Set();
  for (const item of feedbackItems) {
    if (!item.message_id || voted.has(item.message_id)) continue;
    if (item.type !== "thumbs_up" && item.type !== "thumbs_down") continue;
    voted.add(item.message_id);
    const element = messageElement(item.message_id);
    if (element) markVote(element, item.type);
  }
  setBusy(false);
  scrollToEnd(true);
}

// ---------------------------------------------------------------- messages

function messageView(message) {
  const element = $("message-template").content.firstElementChild.cloneNode(true);
  element.classList.add(message.role);
  element.dataset.role = message.role;
  element.querySelector(".role").textContent = message.role;
  element.querySelector(".thumbs-up").addEventListener("click", () => vote(element, "thumbs_up"));
  element.querySelector(".thumbs-down").addEventListener("click", () => vote(element, "thumbs_down"));
  showMessage(element, message);
  return element;
}

function showMessage(element, message) {
  if (message.id) element.dataset.messageId = message.id;
  element.querySelector(".content").textContent = message.content;
  setStatus(element, message.status);
  if (message.role !== "assistant") return;
  const parts = [];
  if (message.status !== "in_progress") {
    parts.push(`${message.total_tokens} tokens (${message.prompt_tokens} in / ${message.completion_tokens} out)`);
    parts.push(message.cost_usd === null ? "cost unknown" : usd(message.cost_usd));
  }
  if (message.model) parts.push([message.provider, message.model].filter(Boolean).join("/"));
  if (message.latency_ms != null) parts.push(`${(message.latency_ms / 1000).toFixed(1)} s`);
  element.querySelector(".usage").textContent = parts.join(" · ");
}

function setStatus(element, status) {
  element.dataset.status = status;
  element.querySelector(".status").textContent = status === "completed" ? "" : status.replace("_", " ");
}

function messageElement(id) {
  for (const element of $("messages").querySelectorAll(".message")) {
    if (element.dataset.messageId === id) return element;
  }
  return null;
}

function appendMessage(message) {
  const element = messageView(message);
  $("messages").append(element);
  scrollToEnd(true);
  return element;
}

function scrollToEnd(force) {
  const box = $("messages");
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 80) {
    box.scrollTop = box.scrollHeight;
  }
}

function markVote(element, type) {
  element.querySelector(".thumbs-up").setAttribute("aria-pressed", String(type === "thumbs_up"));
  element.querySelector(".thumbs-down").setAttribute("aria-pressed", String(type === "thumbs_down"));
}

async function vote(element, type) {
  hideError();
  try {
    await api("POST", `/conversations/${state.conversationId}/feedback`, {
      type,
      message_id: element.dataset.messageId,
    });
    markVote(element, type);
  } catch (error) {
    showError(error);
  }
}

// ---------------------------------------------------------------- streaming

// Applies one SSE event to a reply's element; true when the reply has ended.
function applyEvent(element, type, data) {
  switch (type) {
    case "start":
      // Every stream read from its beginning opens with `start`: the text is rebuilt from here.
      element.dataset.messageId = data.message_id;
      element.querySelector(".content").textContent = "";
      showMessage(element, {
        role: "assistant",
        content: "",
        status: "in_progress",
        provider: data.provider,
        model: data.model,
      });
      return false;
    case "delta":
      element.querySelector(".content").append(data.content);
      scrollToEnd(false);
      return false;
    case "done":
      showMessage(element, data.message);
      return true;
    case "error":
      setStatus(element, "failed");
      showError(`The reply failed: ${data.message || "no detail"} (${data.code})`);
      return true;
    default:
      return false;
  }
}

function setBusy(busy) {
  state.busy = busy;
  const ready = Boolean(state.conversationId) && !busy;
  $("message-input").disabled = !state.conversationId;
  $("send").disabled = !ready;
}

function detachStreams() {
  if (state.abort) state.abort.abort();
  if (state.source) state.source.close();
  state.abort = null;
  state.source = null;
}

async function sendMessage(event) {
  event.preventDefault();
  const input = $("message-input");
  const content = input.value;
  const conversationId = state.conversationId;
  if (!content.trim() || !conversationId || state.busy) return;
  hideError();
  setBusy(true);
  input.value = "";
  const question = appendMessage({ role: "user", content, status: "completed" });
  const reply = appendMessage({ role: "assistant", content: "", status: "in_progress" });
  const abort = new AbortController();
  state.abort = abort;
  let started = false;
  let ended = false;
  try {
    const response = await fetch(`${API}/conversations/${conversationId}/messages`, {
      method: "POST",
      headers: requestHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ content, stream: true }),
      signal: abort.signal,
    });
    if (!response.ok) throw await problemOf(response);
    for await (const item of readEvents(response.body)) {
      started = true;
      ended = applyEvent(reply, item.event, JSON.parse(item.data));
      if (ended) break;
    }
  } catch (error) {
    if (abort.signal.aborted) return; // the user moved to another conversation
    if (!started) {
      question.remove();
      reply.remove();
      input.value = content;
      showError(error);
      setBusy(false);
      return;
    }
  } finally {
    if (state.abort === abort) state.abort = null;
  }
  if (state.conversationId !== conversationId) return;
  if (!ended) {
    // The connection dropped mid-reply; the server still owns the generation: follow it.
    attach(conversationId, reply);
    return;
  }
  await refreshConversation();
}

// Follows the reply running in a conversation (or replays its latest) with EventSource.
// Without a token the browser reconnects by itself and sends Last-Event-ID. With one, every
// connection needs a new single-use ticket (the browser would retry with the spent one and
// get a 401): on a dropped connection the page opens a new source itself, naming the last
// event it saw in `last_event_id`, which resumes exactly like the header.
async function attach(conversationId, reply) {
  detachStreams();
  setBusy(true);
  const withTicket = Boolean(sessionStorage.getItem(TOKEN_KEY));
  let source = null;
  let lastEventId = "";
  let emptyReconnects = 0;

  const finish = async () => {
    if (source) source.close();
    if (state.source !== source) return;
    state.source = null;
    setBusy(false);
    await refreshConversation();
  };
  const relay = (type) => (event) => {
    emptyReconnects = 0;
    if (event.lastEventId) lastEventId = event.lastEventId;
    if (applyEvent(reply, type, JSON.parse(event.data))) finish();
  };
  const onError = (event) => {
    // The server's own `error` event and the browser's connection error share this name.
    if (event instanceof MessageEvent && event.data) {
      relay("error")(event);
      return;
    }
    const refused = source.readyState === EventSource.CLOSED;
    if (++emptyReconnects > MAX_EMPTY_RECONNECTS || (refused && !withTicket)) {
      if (refused) showError("The reply's stream could not be opened; reload to try again.");
      finish(); // the stream keeps ending without news: show what is stored
    } else if (withTicket) {
      source.close();
      setTimeout(open, RECONNECT_DELAY_MS);
    }
    // Otherwise the browser reconnects after `retry`, sending Last-Event-ID.
  };
  const open = async () => {
    const params = new URLSearchParams();
    if (withTicket) {
      try {
        const { ticket } = await api("POST", "/auth/stream-ticket");
        params.set("ticket", ticket);
      } catch (error) {
        showError(error);
        if (source) finish();
        else setBusy(false);
        return;
      }
    }
    if (lastEventId) params.set("last_event_id", lastEventId);
    // The user moved on (another conversation, another attach) while the ticket came.
    if (state.conversationId !== conversationId || state.source !== source) return;
    const query = params.toString();
    source = new EventSource(`${API}/conversations/${conversationId}/stream${query ? `?${query}` : ""}`);
    state.source = source;
    for (const type of ["start", "delta", "done"]) source.addEventListener(type, relay(type));
    source.addEventListener("error", onError);
  };
  await open();
}

// ---------------------------------------------------------------- start-up

function saveToken(event) {
  event.preventDefault();
  const token = $("api-token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  loadConversations();
}

async function start() {
  $("new-conversation").addEventListener("submit", createConversation);
  $("composer").addEventListener("submit", sendMessage);
  $("auth-form").addEventListener("submit", saveToken);
  $("error-dismiss").addEventListener("click", hideError);
  $("usage-panel").addEventListener("toggle", () => {
    if ($("usage-panel").open) loadUsage();
  });
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("api-token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  setBusy(false);
  await loadConversations();
  const remembered = localStorage.getItem(SELECTED_KEY);
  if (remembered) await selectConversation(remembered, { forgetIfMissing: true });
  markSelected();
  document.body.dataset.ready = "true";
}

start();
