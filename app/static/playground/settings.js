// Conversation settings: the tools offered on every turn, edited as JSON.

import { api } from "./api.js";
import { $, describeError, state } from "./page.js";

// The conversation's default tools as editable JSON; an unsaved draft survives refreshes.
export function showTools(conversation) {
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

/** Saves the tools JSON on the conversation, or says why it can't. */
export async function saveTools(event) {
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

/** Notes an unsaved draft of the tools, which a refresh then keeps. */
export function draftTools() {
  state.toolsEdited = true;
  $("tools-status").textContent = "";
}
