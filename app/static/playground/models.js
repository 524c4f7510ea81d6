// The model picker: which provider and model new turns and regenerations ask for.

import { api } from "./api.js";
import { $, showError } from "./page.js";

/** Fills the picker from GET /models; its first choice sends neither field. */
export async function loadModels() {
  let list;
  try {
    list = await api("GET", "/models");
  } catch (error) {
    showError(error);
    return;
  }
  const picker = $("model-picker");
  const chosen = picker.value;
  const keep = picker.options[0];
  const options = list.items.map((item) => {
    const option = document.createElement("option");
    option.value = `${item.provider}/${item.model}`;
    option.dataset.provider = item.provider;
    option.dataset.model = item.model;
    option.textContent = `${item.provider} / ${item.model}${item.default ? " (default)" : ""}`;
    return option;
  });
  picker.replaceChildren(keep, ...options);
  picker.value = options.some((option) => option.value === chosen) ? chosen : "";
}

/** The picked provider and model as turn fields; {} leaves the conversation's own. */
export function chosenModel() {
  const option = $("model-picker").selectedOptions[0];
  if (!option || !option.dataset.provider) return {};
  return { provider: option.dataset.provider, model: option.dataset.model };
}
