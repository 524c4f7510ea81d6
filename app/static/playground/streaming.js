// A reply streaming in: posting a turn and reading its events, or following a running reply
// with EventSource, and keeping the page busy meanwhile.

import { api, replyEvents, storedToken, streamTurn } from "./api.js";
import { refreshConversation } from "./conversations.js";
import { appendMessage, appendReasoning, scrollToEnd, setStatus, showMessage } from "./messages.js";
import { chosenModel } from "./models.js";
import { $, hideError, showError, state } from "./page.js";
import { addToolCallPiece, forgetLiveCalls } from "./tool-calls.js";

// Reconnections in a row that bring no event before an attached stream is given up.
const MAX_EMPTY_RECONNECTS = 3;
// With a token, how long to wait before reopening a dropped stream with a new ticket.
const RECONNECT_DELAY_MS = 1000;

// Applies one SSE event to a reply's element; true when the reply has ended.
function applyEvent(element, type, data) {
  switch (type) {
    case "start":
      // Every stream read from its beginning opens with `start`: the reply is rebuilt from here.
      element.dataset.messageId = data.message_id;
      state.replyId = data.message_id;
      showStop();
      forgetLiveCalls(element);
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
      forgetLiveCalls(element);
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

/** Marks a reply as streaming (or not) and enables the controls that send accordingly. */
export function setBusy(busy) {
  state.busy = busy;
  if (!busy) state.replyId = null;
  const ready = Boolean(state.conversationId) && !busy;
  $("message-input").disabled = !state.conversationId;
  $("attach").disabled = !state.conversationId;
  $("send").disabled = !ready;
  // Everything else that would start a reply: tool results, edits, regenerations, versions.
  for (const button of document.querySelectorAll(".tool-results button[type='submit'], [data-sends]")) {
    button.disabled = !ready;
  }
  showStop();
}

// Stop shows while a reply streams in and its id is known.
function showStop() {
  $("stop").hidden = !(state.busy && state.replyId);
  $("stop").disabled = false;
}

/** Cancels the reply streaming in; its stream then ends with the reply, status cancelled. */
export async function stopReply() {
  const { conversationId, replyId } = state;
  if (!conversationId || !replyId) return;
  $("stop").disabled = true;
  try {
    await api("POST", `/conversations/${conversationId}/messages/${replyId}/cancel`);
  } catch (error) {
    showError(error);
    $("stop").disabled = false;
  }
}

/** Stops reading any reply stream: the page moves to another conversation. */
export function detachStreams() {
  if (state.abort) state.abort.abort();
  if (state.source) state.source.close();
  state.abort = null;
  state.source = null;
}

// Posts a turn (with the picked model) and streams its reply in. `said` is what the turn adds
// before the reply, shown at once; if the turn is refused before its reply starts, it goes and
// `restore` puts the drafts back.
export async function sendTurn(body, said, restore) {
  const conversationId = state.conversationId;
  hideError();
  setBusy(true);
  const shown = said.map(appendMessage);
  const reply = appendMessage({ role: "assistant", content: "", status: "in_progress" });
  await streamReply(
    reply,
    (signal) => streamTurn(conversationId, { ...chosenModel(), ...body }, signal),
    () => {
      for (const element of shown) element.remove();
      reply.remove();
      restore();
    },
  );
}

/** Streams the events `open(signal)` yields into `reply` (the page already busy); if they are
 * refused before the reply starts, `undo` puts the page back and the error shows. */
export async function streamReply(reply, open, undo) {
  const conversationId = state.conversationId;
  const abort = new AbortController();
  state.abort = abort;
  let started = false;
  let ended = false;
  try {
    for await (const item of open(abort.signal)) {
      started = true;
      ended = applyEvent(reply, item.event, JSON.parse(item.data));
      if (ended) break;
    }
  } catch (error) {
    if (abort.signal.aborted) return; // the user moved to another conversation
    if (!started) {
      undo();
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
export async function attach(conversationId, reply) {
  detachStreams();
  setBusy(true);
  const withTicket = Boolean(storedToken());
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
    source = replyEvents(conversationId, params);
    state.source = source;
    for (const type of ["start", "delta", "reasoning", "tool_call", "done"]) {
      source.addEventListener(type, relay(type));
    }
    source.addEventListener("error", onError);
  };
  await open();
}
