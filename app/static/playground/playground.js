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
// The server takes 1 MiB bodies by default and base64 makes an image a third larger: this
// much image leaves room for the text beside it.
const MAX_IMAGE_BYTES = 700 * 1024;

const $ = (id) => document.getElementById(id);

const state = {
  conversationId: null,
  busy: false, // a reply is streaming into the selected conversation
  abort: null, // AbortController of a POST stream
  source: null, // EventSource attached to a running reply
  attachment: null, // { url, name }: the image the next message carries, as a data URL
  toolsEdited: false, // the tools textarea holds an unsaved draft: a refresh keeps it
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
  $("conversation-settings").hidden = true;
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
  showTools(conversation);
  toolCallNames.clear();
  $("messages").replaceChildren(...conversation.messages.map(messageView));
  offerToolResults(conversation.messages);
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
  showAttachments(element, message.parts);
  showReasoning(element, message.reasoning);
  showToolCalls(element, message.tool_calls);
  if (message.role === "tool") showToolAnswer(element, message.tool_call_id);
  if (message.role !== "assistant") return;
  const parts = [];
  if (message.status !== "in_progress") {
    const reasoned = message.reasoning_tokens ? `, ${message.reasoning_tokens} reasoning` : "";
    parts.push(`${message.total_tokens} tokens (${message.prompt_tokens} in / ${message.completion_tokens} out${reasoned})`);
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

// ---------------------------------------------------------------- reasoning, images, tool calls

// The names of the calls shown so far, by id: a tool result says which call it answers.
const toolCallNames = new Map();
// A streaming reply's calls, assembled from its `tool_call` pieces (index → id, name, arguments).
const liveCalls = new WeakMap();

function showReasoning(element, text) {
  const block = element.querySelector(".reasoning");
  block.querySelector(".reasoning-text").textContent = text || "";
  block.hidden = !text;
}

function appendReasoning(element, text) {
  const block = element.querySelector(".reasoning");
  block.querySelector(".reasoning-text").append(text);
  block.hidden = false;
}

// Thumbnails of a message's images (data URLs; the page's CSP loads no other image), links to
// the images it names by URL, and the names of its files.
function showAttachments(element, parts) {
  const views = [];
  let images = 0;
  for (const part of parts || []) {
    if (part.type === "image_url") {
      images += 1;
      const url = String((part.image_url && part.image_url.url) || "");
      if (url.startsWith("data:image/")) {
        const image = document.createElement("img");
        image.className = "thumbnail";
        image.src = url;
        image.alt = `Attached image ${images}`;
        views.push(image);
      } else if (/^https?:\/\//i.test(url)) {
        const link = document.createElement("a");
        link.className = "image-link";
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.textContent = `Image ${images}: ${url}`;
        views.push(link);
      }
    } else if (part.type === "file") {
      const file = part.file || {};
      const name = document.createElement("span");
      name.className = "file-name";
      name.textContent = `File: ${file.filename || file.file_id || "attached"}`;
      views.push(name);
    }
  }
  const box = element.querySelector(".attachments");
  box.replaceChildren(...views);
  box.hidden = views.length === 0;
}

function showToolCalls(element, calls) {
  const box = element.querySelector(".tool-calls");
  box.replaceChildren(
    ...(calls || []).map((call) => {
      const fn = call.function || {};
      if (call.id && fn.name) toolCallNames.set(call.id, fn.name);
      return toolCallView(document.createElement("details"), call.id, fn.name, fn.arguments);
    }),
  );
  box.hidden = box.childElementCount === 0;
}

// One `tool_call` event: the first piece of a call names it, the rest extend its arguments.
function addToolCallPiece(element, piece) {
  const calls = liveCalls.get(element) || [];
  liveCalls.set(element, calls);
  const call = calls[piece.index] || { id: "", name: "", arguments: "" };
  calls[piece.index] = call;
  if (piece.id) call.id = piece.id;
  if (piece.name) call.name = piece.name;
  call.arguments += piece.arguments || "";
  const box = element.querySelector(".tool-calls");
  let block = box.querySelector(`.tool-call[data-index="${Number(piece.index)}"]`);
  if (!block) {
    block = document.createElement("details");
    block.dataset.index = String(Number(piece.index));
    box.append(block);
  }
  toolCallView(block, call.id, call.name, call.arguments);
  box.hidden = false;
}

// Fills a call's block: its name and id as the summary, its arguments as indented JSON (as
// written while they are not whole JSON yet).
function toolCallView(block, id, name, args) {
  block.className = "tool-call";
  if (!block.dataset.filled) block.open = true;
  block.dataset.filled = "true";
  if (id) block.dataset.toolCallId = id;
  const summary = document.createElement("summary");
  const nameView = document.createElement("code");
  nameView.className = "tool-name";
  nameView.textContent = name || "…";
  summary.append("Tool call ", nameView);
  if (id) {
    const idView = document.createElement("span");
    idView.className = "tool-call-id";
    idView.textContent = id;
    summary.append(" ", idView);
  }
  const argsView = document.createElement("pre");
  argsView.className = "tool-arguments";
  argsView.textContent = prettyJson(args || "");
  block.replaceChildren(summary, argsView);
  return block;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function showToolAnswer(element, callId) {
  const answer = element.querySelector(".tool-answer");
  const name = toolCallNames.get(callId);
  answer.textContent = name ? `Result of ${name} (${callId})` : `Result of call ${callId || "?"}`;
  answer.hidden = false;
}

// When the latest reply ended by calling tools, the next turn must answer every call: a form
// under that reply takes a result for each, and an optional follow-up message.
function offerToolResults(messages) {
  const last = messages[messages.length - 1];
  if (!last || last.role !== "assistant" || last.status !== "completed") return;
  if (last.finish_reason !== "tool_calls" || !(last.tool_calls || []).length) return;
  const element = messageElement(last.id);
  if (element) element.insertBefore(toolResultsForm(last.tool_calls), element.querySelector(".meta"));
}

function toolResultsForm(calls) {
  const form = document.createElement("form");
  form.className = "tool-results";
  form.setAttribute("aria-label", "Tool results");
  const intro = document.createElement("p");
  intro.className = "muted";
  intro.textContent = "The reply called tools: give each call its result.";
  form.append(intro);
  calls.forEach((call, position) => {
    const fieldId = `tool-result-${position}`;
    const label = document.createElement("label");
    label.htmlFor = fieldId;
    label.textContent = `Result of ${(call.function && call.function.name) || "call"} (${call.id})`;
    const input = document.createElement("textarea");
    input.id = fieldId;
    input.rows = 2;
    input.spellcheck = false;
    input.className = "tool-result-input";
    input.dataset.toolCallId = call.id;
    form.append(label, input);
  });
  const followLabel = document.createElement("label");
  followLabel.htmlFor = "tool-follow-up";
  followLabel.textContent = "Follow-up message (optional)";
  const followUp = document.createElement("textarea");
  followUp.id = "tool-follow-up";
  followUp.rows = 1;
  followUp.className = "tool-follow-up";
  const send = document.createElement("button");
  send.type = "submit";
  send.textContent = "Send results";
  send.disabled = state.busy;
  form.append(followLabel, followUp, send);
  form.addEventListener("submit", (event) => sendToolResults(event, form));
  return form;
}

async function sendToolResults(event, form) {
  event.preventDefault();
  if (!state.conversationId || state.busy) return;
  const results = [...form.querySelectorAll(".tool-result-input")].map((input) => ({
    tool_call_id: input.dataset.toolCallId,
    content: input.value,
  }));
  const text = form.querySelector(".tool-follow-up").value;
  const body = { tool_results: results };
  const said = results.map((result) => ({ role: "tool", status: "completed", ...result }));
  if (text.trim()) {
    body.content = text;
    said.push({ role: "user", content: text, status: "completed" });
  }
  form.hidden = true;
  await sendTurn(body, said, () => {
    form.hidden = false;
  });
}

// ---------------------------------------------------------------- streaming

// Applies one SSE event to a reply's element; true when the reply has ended.
function applyEvent(element, type, data) {
  switch (type) {
    case "start":
      // Every stream read from its beginning opens with `start`: the reply is rebuilt from here.
      element.dataset.messageId = data.message_id;
      liveCalls.delete(element);
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
    case "reasoning":
      appendReasoning(element, data.content);
      scrollToEnd(false);
      return false;
    case "tool_call":
      addToolCallPiece(element, data);
      scrollToEnd(false);
      return false;
    case "done":
      liveCalls.delete(element);
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
  $("attach").disabled = !state.conversationId;
  $("send").disabled = !ready;
  for (const button of document.querySelectorAll(".tool-results button[type='submit']")) {
    button.disabled = !ready;
  }
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
  const text = input.value;
  const image = state.attachment;
  if ((!text.trim() && !image) || !state.conversationId || state.busy) return;
  let content = text;
  let parts = null;
  if (image) {
    parts = [{ type: "image_url", image_url: { url: image.url, detail: "auto" } }];
    if (text.trim()) parts.unshift({ type: "text", text });
    content = parts;
  }
  input.value = "";
  clearAttachment();
  await sendTurn({ content }, [{ role: "user", content: text, parts, status: "completed" }], () => {
    input.value = text;
    if (image) setAttachment(image);
  });
}

// Posts a turn and streams its reply in. `said` is what the turn adds before the reply, shown
// at once; if the turn is refused before its reply starts, it goes and `restore` puts the
// drafts back.
async function sendTurn(body, said, restore) {
  const conversationId = state.conversationId;
  hideError();
  setBusy(true);
  const shown = said.map(appendMessage);
  const reply = appendMessage({ role: "assistant", content: "", status: "in_progress" });
  const abort = new AbortController();
  state.abort = abort;
  let started = false;
  let ended = false;
  try {
    const response = await fetch(`${API}/conversations/${conversationId}/messages`, {
      method: "POST",
      headers: requestHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ ...body, stream: true }),
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
      for (const element of shown) element.remove();
      reply.remove();
      restore();
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
    for (const type of ["start", "delta", "reasoning", "tool_call", "done"]) {
      source.addEventListener(type, relay(type));
    }
    source.addEventListener("error", onError);
  };
  await open();
}

// ---------------------------------------------------------------- image attachment

function kib(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

// Reads the chosen image as a data URL for the next message; refuses what a request can't hold.
function chooseImage() {
  const input = $("image-input");
  const file = input.files && input.files[0];
  input.value = ""; // choosing the same file again still fires `change`
  if (!file) return;
  hideError();
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image.`);
    return;
  }
  if (file.size > MAX_IMAGE_BYTES) {
    showError(
      `The image is ${kib(file.size)}: images up to ${kib(MAX_IMAGE_BYTES)} can be sent ` +
        "(a request holds 1 MiB, and an image grows by a third in it).",
    );
    return;
  }
  const reader = new FileReader();
  reader.addEventListener("load", () => setAttachment({ url: reader.result, name: file.name }));
  reader.addEventListener("error", () => showError(`${file.name} could not be read.`));
  reader.readAsDataURL(file);
}

function setAttachment(image) {
  state.attachment = image;
  $("attachment-preview").src = image.url;
  $("attachment-name").textContent = image.name;
  $("attachment").hidden = false;
}

function clearAttachment() {
  state.attachment = null;
  $("attachment").hidden = true;
  $("attachment-preview").removeAttribute("src");
  $("attachment-name").textContent = "";
}

// ---------------------------------------------------------------- conversation tools

// The conversation's default tools as editable JSON; an unsaved draft survives refreshes.
function showTools(conversation) {
  $("conversation-settings").hidden = false;
  if (state.toolsEdited && $("tools-form").dataset.conversationId === conversation.id) return;
  $("tools-form").dataset.conversationId = conversation.id;
  $("tools-input").value = conversation.tools ? JSON.stringify(conversation.tools, null, 2) : "";
  state.toolsEdited = false;
  showToolsProblem(null);
  $("tools-status").textContent = "";
}

function showToolsProblem(text) {
  $("tools-error").textContent = text || "";
  $("tools-error").hidden = !text;
  $("tools-input").setAttribute("aria-invalid", String(Boolean(text)));
}

async function saveTools(event) {
  event.preventDefault();
  const id = state.conversationId;
  if (!id) return;
  const text = $("tools-input").value.trim();
  let tools = null; // empty: the conversation offers no tools
  if (text) {
    try {
      tools = JSON.parse(text);
    } catch (error) {
      showToolsProblem(`Tools are not valid JSON: ${error.message}`);
      return;
    }
    if (!Array.isArray(tools)) {
      showToolsProblem('Tools must be a JSON array of {"type": "function", "function": {...}} objects.');
      return;
    }
  }
  showToolsProblem(null);
  $("tools-status").textContent = "Saving…";
  try {
    const conversation = await api("PATCH", `/conversations/${id}`, { tools });
    if (state.conversationId !== id) return;
    state.toolsEdited = false;
    showTools(conversation);
    const count = (conversation.tools || []).length;
    $("tools-status").textContent = `Saved: ${count} tool${count === 1 ? "" : "s"}.`;
  } catch (error) {
    $("tools-status").textContent = "";
    showToolsProblem(describeError(error));
  }
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
  $("attach").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", chooseImage);
  $("attachment-remove").addEventListener("click", clearAttachment);
  $("tools-form").addEventListener("submit", saveTools);
  $("tools-input").addEventListener("input", () => {
    state.toolsEdited = true;
    $("tools-status").textContent = "";
  });
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
