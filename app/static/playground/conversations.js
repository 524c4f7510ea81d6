// The conversation list, the selected conversation and its header totals.

import { ApiError, api } from "./api.js";
import { showBranchControls } from "./branches.js";
import { offerToolResults } from "./composer.js";
import { hideActions, showActions } from "./conversation-actions.js";
import { markVote, messageElement, messageView, scrollToEnd } from "./messages.js";
import { $, hideError, showError, state, usd } from "./page.js";
import { showTools } from "./settings.js";
import { attach, detachStreams, setBusy } from "./streaming.js";
import { forgetToolCallNames } from "./tool-calls.js";
import { loadUsage } from "./usage.js";

const SELECTED_KEY = "chat-api.playground.conversation";

/** Lists the latest 50 conversations in the sidebar: the archived ones, or the others. */
export async function loadConversations() {
  const archived = state.showArchived;
  let page;
  try {
    page = await api("GET", `/conversations?limit=50&archived=${archived}`);
  } catch (error) {
    showError(error);
    return;
  }
  if (state.showArchived !== archived) return; // toggled meanwhile
  const list = $("conversation-list");
  list.replaceChildren(...page.items.map(conversationItem));
  $("conversation-list-empty").textContent = archived ? "No archived conversations." : "No conversations yet.";
  $("conversation-list-empty").hidden = page.items.length > 0;
}

/** Switches the list between archived conversations and the others. */
export async function toggleArchived() {
  state.showArchived = $("show-archived").checked;
  await loadConversations();
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
  const pinned = conversation.pinned ? "Pinned · " : "";
  summary.textContent = `${pinned}${conversation.message_count} messages · ${usd(conversation.total_cost_usd)}`;
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

/** Creates a conversation from the sidebar form and selects it. */
export async function createConversation(event) {
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

/** Redraws the selected conversation, the list and (if open) the spend panel from the server. */
export async function refreshConversation() {
  if (state.conversationId) await selectConversation(state.conversationId);
  await loadConversations();
  if ($("usage-panel").open) await loadUsage();
}

/** Shows no conversation and forgets the selected one: it was deleted. */
export function closeConversation() {
  detachStreams();
  localStorage.removeItem(SELECTED_KEY);
  state.conversationId = null;
  renderEmpty();
}

function renderEmpty() {
  hideActions();
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
  showActions(conversation);
  forgetToolCallNames();
  $("messages").replaceChildren(
    ...conversation.messages.map((message) => showBranchControls(messageView(message), message)),
  );
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

/** Lists the conversations and reopens the one this browser had selected, if it still exists. */
export async function openRemembered() {
  await loadConversations();
  const remembered = localStorage.getItem(SELECTED_KEY);
  if (remembered) await selectConversation(remembered, { forgetIfMissing: true });
  markSelected();
}
