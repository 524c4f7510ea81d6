// What every part of the page shares: element lookup, the page's state, money as text and the
// error banner. Every piece of data reaches the page through textContent or text nodes, never
// as HTML.

import { ApiError } from "./api.js";

export const $ = (id) => document.getElementById(id);

export const state = {
  conversationId: null,
  busy: false, // a reply is streaming into the selected conversation
  abort: null, // AbortController of a POST stream
  source: null, // EventSource attached to a running reply
  replyId: null, // the id of the reply streaming in, once its `start` named it: Stop cancels it
  showArchived: false, // the list shows archived conversations instead of the others
  attachment: null, // { url, name }: the image the next message carries, as a data URL
  toolsEdited: false, // the tools textarea holds an unsaved draft: a refresh keeps it
};

/** Money as text: exact to 1e-8, trailing zeros trimmed, cents kept. */
export function usd(value) {
  const amount = Number(value || 0);
  // Money is exact to 1e-8; show that, trimmed, but keep cents.
  return `$${amount.toFixed(8).replace(/(\.\d\d\d*?)0+$/, "$1")}`;
}

/** An error as one line: a problem's detail, its field errors and its code. */
export function describeError(error) {
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

/** Shows an error (or a message) in the banner. */
export function showError(error) {
  $("error-text").textContent = typeof error === "string" ? error : describeError(error);
  $("error").hidden = false;
}

/** Empties and hides the banner. */
export function hideError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}
