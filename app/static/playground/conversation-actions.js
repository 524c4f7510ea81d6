// What can be done to the selected conversation as a whole: rename, pin, archive, delete and
// export it.

import { api, apiUrl, download, storedToken } from "./api.js";
import { closeConversation, loadConversations } from "./conversations.js";
import { $, hideError, showError, state } from "./page.js";

/** Shows the actions for this conversation: pin and archive as it now is, its export links. */
export function showActions(conversation) {
  $("conversation-actions").hidden = false;
  $("pin").textContent = conversation.pinned ? "Unpin" : "Pin";
  $("pin").setAttribute("aria-pressed", String(conversation.pinned));
  $("archive").textContent = conversation.archived ? "Unarchive" : "Archive";
  $("archive").dataset.archived = String(conversation.archived);
  const base = `/conversations/${conversation.id}/export`;
  $("export-json").href = apiUrl(`${base}?format=json`);
  $("export-markdown").href = apiUrl(`${base}?format=markdown`);
  $("export-json").download = `conversation-${conversation.id}.json`;
  $("export-markdown").download = `conversation-${conversation.id}.md`;
}

/** Hides the actions: no conversation is selected. */
export function hideActions() {
  $("conversation-actions").hidden = true;
  closeRename();
}

// One PATCH of the selected conversation; the header and the list then show its result.
async function update(fields) {
  const id = state.conversationId;
  if (!id) return;
  hideError();
  let conversation;
  try {
    conversation = await api("PATCH", `/conversations/${id}`, fields);
  } catch (error) {
    showError(error);
    return;
  }
  if (state.conversationId !== id) return;
  $("conversation-title").textContent = conversation.title || "Untitled";
  showActions(conversation);
  await loadConversations();
}

function openRename() {
  $("rename-input").value = $("conversation-title").textContent;
  $("conversation-title").hidden = true;
  $("rename-form").hidden = false;
  $("rename-input").focus();
}

function closeRename() {
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
}

async function rename(event) {
  event.preventDefault();
  const title = $("rename-input").value.trim();
  closeRename();
  await update({ title: title || null });
}

async function remove() {
  const id = state.conversationId;
  const title = $("conversation-title").textContent;
  if (!id || !window.confirm(`Delete “${title}” and all its messages? This cannot be undone.`)) return;
  hideError();
  try {
    await api("DELETE", `/conversations/${id}`);
  } catch (error) {
    showError(error);
    return;
  }
  closeConversation();
  await loadConversations();
}

// Without a token the link downloads by itself; with one, the file is fetched with it.
async function exportWithToken(event) {
  if (!storedToken()) return;
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const url = URL.createObjectURL(await download(link.href));
    const save = document.createElement("a");
    save.href = url;
    save.download = link.download;
    save.click();
    setTimeout(() => URL.revokeObjectURL(url), 0);
  } catch (error) {
    showError(error);
  }
}

/** Wires the header's actions. */
export function wireActions() {
  $("rename").addEventListener("click", openRename);
  $("rename-cancel").addEventListener("click", closeRename);
  $("rename-form").addEventListener("submit", rename);
  $("pin").addEventListener("click", () => update({ pinned: $("pin").getAttribute("aria-pressed") !== "true" }));
  $("archive").addEventListener("click", () => update({ archived: $("archive").dataset.archived !== "true" }));
  $("delete").addEventListener("click", remove);
  $("export-json").addEventListener("click", exportWithToken);
  $("export-markdown").addEventListener("click", exportWithToken);
}
