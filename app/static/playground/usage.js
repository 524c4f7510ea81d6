// The sidebar's spend panel: the last 30 days of spend as two bar charts.

import { api } from "./api.js";
import { $, showError, usd } from "./page.js";

const SVG = "http://www.w3.org/2000/svg";
const USAGE_DAYS = 30;
const BAR_HEIGHT = 16;
const BAR_GAP = 6;
const LABEL_WIDTH = 78;
const VALUE_WIDTH = 66;
const CHART_WIDTH = 260;

// Spend per day and per model from GET /usage, drawn as bars (SVG built node by node: the
// data, model names included, only ever becomes text).
export async function loadUsage() {
  const since = new Date(Date.now() - USAGE_DAYS * 86_400_000).toISOString();
  const query = `from=${encodeURIComponent(since)}`;
  try {
    const [byDay, byModel] = await Promise.all([
      api("GET", `/usage?group_by=day&${query}`),
      api("GET", `/usage?group_by=model&${query}`),
    ]);
    const days = [...byDay.items].sort((a, b) => a.key.localeCompare(b.key));
    drawBars($("usage-by-day"), days);
    drawBars($("usage-by-model"), byModel.items);
    $("usage-total").textContent = `Total: ${usd(byModel.total_cost_usd)}`;
  } catch (error) {
    showError(error);
  }
}

function drawBars(svg, items) {
  svg.replaceChildren();
  const largest = Math.max(0, ...items.map((item) => Number(item.cost_usd || 0)));
  const rows = Math.max(items.length, 1);
  svg.setAttribute("viewBox", `0 0 ${CHART_WIDTH} ${rows * (BAR_HEIGHT + BAR_GAP)}`);
  if (!items.length) {
    svg.append(svgText("No spend yet", 0, BAR_HEIGHT - 4, "usage-empty"));
    return;
  }
  const room = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH - 4;
  items.forEach((item, row) => {
    const y = row * (BAR_HEIGHT + BAR_GAP);
    const cost = Number(item.cost_usd || 0);
    const group = document.createElementNS(SVG, "g");
    group.classList.add("usage-bar");
    group.dataset.key = item.key;
    group.dataset.cost = String(item.cost_usd);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${item.key}: ${usd(cost)}, ${item.requests} requests`;
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(LABEL_WIDTH));
    bar.setAttribute("y", String(y));
    bar.setAttribute("height", String(BAR_HEIGHT));
    // A bar for every row that has spend, however small next to the largest.
    const width = largest > 0 ? Math.max(1, (cost / largest) * room) : 0;
    bar.setAttribute("width", String(width));
    const value = svgText(usd(cost), LABEL_WIDTH + width + 4, y + BAR_HEIGHT - 4, "usage-value");
    group.append(title, svgText(item.key, 0, y + BAR_HEIGHT - 4, "usage-label"), bar, value);
    svg.append(group);
  });
}

function svgText(content, x, y, className) {
  const text = document.createElementNS(SVG, "text");
  text.setAttribute("x", String(x));
  text.setAttribute("y", String(y));
  text.classList.add(className);
  text.textContent = content.length > 12 ? `${content.slice(0, 11)}…` : content;
  return text;
}
