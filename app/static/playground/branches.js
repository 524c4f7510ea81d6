// Messages as a tree: editing a message or regenerating a reply makes a new branch beside it,
// and "‹ 2 / 3 ›" moves between a message's versions.

import { api, streamRegeneration } from "./api.js";
import { refreshConversation } from "./conversations.js";
import { chosenModel } from "./models.js";
import { messageView } from "./messages.js";
import { $, hideError, showError, state } from "./page.js";
import { sendTurn, setBusy, streamReply } from "./streaming.js";

/** Adds a stored message's branch controls: its versions, and Edit or Regenerate. */
export function showBranchControls(element, message) {
  const box = element.querySelector(".message-actions");
  const controls = [];
  const siblings = (message.sibling_ids || []).map(String);
  if (siblings.length > 1) controls.push(versionsView(siblings, String(message.id)));
  if (message.role === "user" && message.status === "completed") {
    controls.push(actionButton("Edit", () => startEdit(element, message)));
  } else if (message.role === "assistant" && message.status !== "in_progress") {
    controls.push(actionButton("Regenerate", () => regenerate(element)));
  }
  box.replaceChildren(...controls);
  return element;
}

function actionButton(text, onClick, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  if (label) button.setAttribute("aria-label", label);
  button.dataset.sends = "true"; // disabled while a reply streams, like Send
  button.disabled = state.busy;
  button.addEventListener("click", onClick);
  return button;
}

// "‹ 2 / 3 ›": the message's place among its siblings (oldest first) and the way to the others.
function versionsView(siblings, id) {
  const at = siblings.indexOf(id);
  const nav = document.createElement("span");
  nav.className = "versions";
  nav.setAttribute("role", "group");
  nav.setAttribute("aria-label", "Versions");
  const previous = actionButton("‹", () => showVersion(siblings[at - 1]), "Previous version");
  const next = actionButton("›", () => showVersion(siblings[at + 1]), "Next version");
  previous.disabled ||= at <= 0;
  next.disabled ||= at >= siblings.length - 1;
  // Kept disabled at the ends whatever setBusy does.
  if (at <= 0) delete previous.dataset.sends;
  if (at >= siblings.length - 1) delete next.dataset.sends;
  const position = document.createElement("span");
  position.className = "version-position";
  position.textContent = `${at + 1} / ${siblings.length}`;
  nav.append(previous, position, next);
  return nav;
}

// The conversation continues from the newest message of that sibling's branch.
async function showVersion(siblingId) {
  if (!siblingId || state.busy) return;
  hideError();
  try {
    await api("PATCH", `/conversations/${state.conversationId}`, { active_leaf_id: siblingId });
  } catch (error) {
    showError(error);
    return;
  }
  await refreshConversation();
}

// The message's text becomes a textarea; Save sends it as a new message beside this one.
function startEdit(element, message) {
  if (element.querySelector(".edit-form")) return;
  const content = element.querySelector(".content");
  const form = document.createElement("form");
  form.className = "edit-form";
  form.setAttribute("aria-label", "Edit message");
  const input = document.createElement("textarea");
  input.className = "edit-input";
  input.rows = 3;
  input.value = message.content;
  input.setAttribute("aria-label", "Edited message");
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save";
  save.dataset.sends = "true";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.textContent = "Cancel";
  const stopEditing = () => {
    form.remove();
    content.hidden = false;
  };
  cancel.addEventListener("click", stopEditing);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim() || state.busy) return;
    stopEditing();
    sendEdit(element, message, text);
  });
  form.append(input, save, cancel);
  content.hidden = true;
  content.after(form);
  input.focus();
}

// The edited message and what followed it leave the page; the new message and its reply
// stream in where they were. Refused: they come back. Images and files the message carried
// go with the new text.
async function sendEdit(element, message, text) {
  const removed = [element, ...laterMessages(element)];
  for (const item of removed) item.remove();
  const attached = (message.parts || []).filter((part) => part.type !== "text");
  const parts = attached.length ? [{ type: "text", text }, ...attached] : null;
  const body = { content: parts || text, parent_id: message.parent_id ?? null };
  await sendTurn(body, [{ role: "user", content: text, parts, status: "completed" }], () => {
    $("messages").append(...removed);
  });
}

// A new reply beside this one streams in its place; what followed it (another branch) leaves.
async function regenerate(element) {
  const conversationId = state.conversationId;
  const replyId = element.dataset.messageId;
  if (!replyId || state.busy) return;
  hideError();
  setBusy(true);
  const removed = laterMessages(element);
  for (const item of removed) item.remove();
  const fresh = messageView({ role: "assistant", content: "", status: "in_progress" });
  element.replaceWith(fresh);
  await streamReply(
    fresh,
    (signal) => streamRegeneration(conversationId, replyId, chosenModel(), signal),
    () => {
      fresh.replaceWith(element);
      element.after(...removed);
    },
  );
}

function laterMessages(element) {
  const later = [];
  for (let next = element.nextElementSibling; next; next = next.nextElementSibling) later.push(next);
  return later;
}
