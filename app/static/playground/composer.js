// What the user sends: the composer with its attached image, and the form that answers a
// reply's tool calls.

import { messageElement } from "./messages.js";
import { $, hideError, showError, state } from "./page.js";
import { sendTurn } from "./streaming.js";

// The server takes 1 MiB bodies by default and base64 makes an image a third larger: this
// much image leaves room for the text beside it.
const MAX_IMAGE_BYTES = 700 * 1024;

/** Sends the composer's text and image as a turn; a refused turn puts them back. */
export async function sendMessage(event) {
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

function kib(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

// Reads the chosen image as a data URL for the next message; refuses what a request can't hold.
export function chooseImage() {
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

/** Drops the image the next message would carry. */
export function clearAttachment() {
  state.attachment = null;
  $("attachment").hidden = true;
  $("attachment-preview").removeAttribute("src");
  $("attachment-name").textContent = "";
}

// When the latest reply ended by calling tools, the next turn must answer every call: a form
// under that reply takes a result for each, and an optional follow-up message.
export function offerToolResults(messages) {
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
