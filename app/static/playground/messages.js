// Messages as the page shows them: text, status, usage, votes, reasoning and attachments.

import { api } from "./api.js";
import { $, hideError, showError, state, usd } from "./page.js";
import { showToolAnswer, showToolCalls } from "./tool-calls.js";

/** A new element for a message, from the page's template. */
export function messageView(message) {
  const element = $("message-template").content.firstElementChild.cloneNode(true);
  element.classList.add(message.role);
  element.dataset.role = message.role;
  element.querySelector(".role").textContent = message.role;
  element.querySelector(".thumbs-up").addEventListener("click", () => vote(element, "thumbs_up"));
  element.querySelector(".thumbs-down").addEventListener("click", () => vote(element, "thumbs_down"));
  showMessage(element, message);
  return element;
}

/** Fills a message's element: text, status, attachments, reasoning, calls and usage. */
export function showMessage(element, message) {
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

/** Shows a message's status (nothing once completed). */
export function setStatus(element, status) {
  element.dataset.status = status;
  element.querySelector(".status").textContent = status === "completed" ? "" : status.replace("_", " ");
}

/** The element showing the message with this id, or null. */
export function messageElement(id) {
  for (const element of $("messages").querySelectorAll(".message")) {
    if (element.dataset.messageId === id) return element;
  }
  return null;
}

/** Adds a message at the end of the list and scrolls to it. */
export function appendMessage(message) {
  const element = messageView(message);
  $("messages").append(element);
  scrollToEnd(true);
  return element;
}

/** Scrolls to the newest message if forced or already near the end. */
export function scrollToEnd(force) {
  const box = $("messages");
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 80) {
    box.scrollTop = box.scrollHeight;
  }
}

/** Shows which thumb a message carries. */
export function markVote(element, type) {
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

function showReasoning(element, text) {
  const block = element.querySelector(".reasoning");
  block.querySelector(".reasoning-text").textContent = text || "";
  block.hidden = !text;
}

/** Extends a streaming reply's reasoning. */
export function appendReasoning(element, text) {
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
