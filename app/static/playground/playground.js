// The chat-api playground: plain DOM, no framework, no build. This module wires the page's
// controls to the modules beside it and starts the page.

import { storedToken, storeToken } from "./api.js";
import { chooseImage, clearAttachment, sendMessage } from "./composer.js";
import { wireActions } from "./conversation-actions.js";
import { createConversation, loadConversations, openRemembered, toggleArchived } from "./conversations.js";
import { loadModels } from "./models.js";
import { $, hideError } from "./page.js";
import { draftTools, saveTools } from "./settings.js";
import { setBusy, stopReply } from "./streaming.js";
import { loadUsage } from "./usage.js";

function saveToken(event) {
  event.preventDefault();
  storeToken($("api-token").value.trim());
  loadConversations();
}

async function start() {
  $("new-conversation").addEventListener("submit", createConversation);
  $("composer").addEventListener("submit", sendMessage);
  $("stop").addEventListener("click", stopReply);
  $("show-archived").addEventListener("change", toggleArchived);
  wireActions();
  $("attach").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", chooseImage);
  $("attachment-remove").addEventListener("click", clearAttachment);
  $("tools-form").addEventListener("submit", saveTools);
  $("tools-input").addEventListener("input", draftTools);
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
  $("api-token").value = storedToken();
  setBusy(false);
  await Promise.all([openRemembered(), loadModels()]);
  document.body.dataset.ready = "true";
}

start();
