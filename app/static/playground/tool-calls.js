// A reply's tool calls, stored or assembled piece by piece while it streams, and the call a
// tool result answers.

// The names of the calls shown so far, by id: a tool result says which call it answers.
const toolCallNames = new Map();
// A streaming reply's calls, assembled from its `tool_call` pieces (index → id, name, arguments).
const liveCalls = new WeakMap();

/** Forgets the call names seen so far: a conversation is about to be drawn afresh. */
export function forgetToolCallNames() {
  toolCallNames.clear();
}

/** Forgets a reply's streamed pieces: it restarts, or its whole calls arrived. */
export function forgetLiveCalls(element) {
  liveCalls.delete(element);
}

/** Shows a message's stored calls, one collapsible block each. */
export function showToolCalls(element, calls) {
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
export function addToolCallPiece(element, piece) {
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

// Heads a tool result with the call it answers.
export function showToolAnswer(element, callId) {
  const answer = element.querySelector(".tool-answer");
  const name = toolCallNames.get(callId);
  answer.textContent = name ? `Result of ${name} (${callId})` : `Result of call ${callId || "?"}`;
  answer.hidden = false;
}
