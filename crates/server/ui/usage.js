// Usage (/usage): cost per day stacked per model (Chart.js, global `Chart` from the vendored
// UMD build), fusion vs pass-through, failures and early-exit savings, and the whole table
// beneath the chart as its accessible version.

import { getJSON, isAbort } from "/ui/api.js";
import { h, field, option, showError, clearError, formatCost, formatCount } from "/ui/dom.js";

export const title = "Usage";

const DAY_S = 86_400;
const RANGES = [7, 30, 90];
// Tableau 10: mid-tone hues that keep their contrast on light and dark backgrounds.
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const KINDS = [
  ["fusion", "Fusion"],
  ["completion", "Pass-through"],
];

let chosenDays = 30; // kept across visits

export function mount(root) {
  const page = buildPage(root);
  let controller = null;
  let chart = null;
  let lastBody = null;

  function draw() {
    chart?.destroy();
    chart = lastBody ? drawChart(page, lastBody) : null;
  }

  async function load() {
    controller?.abort();
    controller = new AbortController();
    clearError();
    page.root.setAttribute("aria-busy", "true");
    try {
      const until = Math.floor(Date.now() / 1000);
      const since = startOfDay(until) - (chosenDays - 1) * DAY_S;
      lastBody = await getJSON("/v1/usage", { since, until }, { signal: controller.signal });
      fillFigures(page, lastBody);
      draw();
    } catch (error) {
      if (!isAbort(error)) showError(error.message);
    } finally {
      page.root.removeAttribute("aria-busy");
    }
  }

  // Chart colours come from the CSS variables: redraw when the colour scheme flips.
  const scheme = window.matchMedia("(prefers-color-scheme: dark)");
  scheme.addEventListener("change", draw);
  page.days.addEventListener("change", () => {
    chosenDays = Number(page.days.value) || 30;
    load();
  });
  load();
  return {
    unmount() {
      controller?.abort();
      scheme.removeEventListener("change", draw);
      chart?.destroy();
      chart = null;
    },
  };
}

function buildPage(root) {
  const days = h("select", { id: "usage-days" });
  days.append(...RANGES.map((n) => option(String(n), `Last ${n} days`, n === chosenDays)));
  const canvas = h("canvas", {
    id: "cost-chart",
    attrs: { role: "img", "aria-label": "Cost per day, stacked per model. The table below lists the same figures." },
  });
  const page = {
    root,
    days,
    canvas,
    chartEmpty: h("p", { id: "chart-empty", class: "empty muted", text: "No usage in this range.", hidden: true }),
    byKind: h("div", { id: "by-kind", class: "kind-cards" }),
    saved: h("p", { id: "saved", class: "saved" }),
    failures: h("table", { id: "failures", class: "data-table compact" }),
    table: h("table", { id: "usage-table", class: "data-table" }),
    totals: h("p", { id: "usage-totals", class: "muted" }),
  };
  root.replaceChildren(
    h("div", { class: "page-head with-controls" },
      h("div", {}, h("h1", { text: "Usage" }), page.totals),
      h("form", { class: "inline-form", attrs: { "aria-label": "Range" }, on: { submit: (e) => e.preventDefault() } }, field("Range", days))
    ),
    h("div", { class: "usage-grid" },
      h("section", { class: "card chart-card", attrs: { "aria-labelledby": "chart-title" } },
        h("h2", { id: "chart-title", text: "Cost per day" }),
        h("div", { class: "chart-box" }, canvas),
        page.chartEmpty
      ),
      h("div", { class: "side-cards" },
        h("section", { class: "card", attrs: { "aria-labelledby": "kind-title" } }, h("h2", { id: "kind-title", text: "Fusion vs pass-through" }), page.byKind),
        h("section", { class: "card", attrs: { "aria-labelledby": "saved-title" } }, h("h2", { id: "saved-title", text: "Early exit" }), page.saved),
        h("section", { class: "card", attrs: { "aria-labelledby": "failures-title" } }, h("h2", { id: "failures-title", text: "Failures" }), page.failures)
      )
    ),
    h("section", { class: "block", attrs: { "aria-labelledby": "table-title" } },
      h("h2", { id: "table-title", text: "Per day and model" }),
      h("div", { class: "table-wrap card flush" }, page.table)
    )
  );
  return page;
}

function startOfDay(unix) {
  return Math.floor(unix / DAY_S) * DAY_S;
}

function dayLabel(unix) {
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

function rowsOf(body) {
  return Array.isArray(body?.rows) ? body.rows : [];
}

// ---- figures and tables ------------------------------------------------------------------------

function fillFigures(page, body) {
  const rows = rowsOf(body);
  const total = (pick) => rows.reduce((sum, r) => sum + (Number(pick(r)) || 0), 0);
  page.totals.textContent = `${formatCount(total((r) => r.requests))} requests · ${formatCost(total((r) => r.cost_usd))} in this range (UTC days)`;

  page.byKind.replaceChildren(
    ...KINDS.map(([kind, label]) => {
      const mine = rows.filter((r) => r.kind === kind);
      const sum = (pick) => mine.reduce((s, r) => s + (Number(pick(r)) || 0), 0);
      return h(
        "div",
        { class: "kind-card", dataset: { kind } },
        h("h3", { text: label }),
        h(
          "dl",
          { class: "figures" },
          h("div", {}, h("dt", { text: "Requests" }), h("dd", { text: formatCount(sum((r) => r.requests)) })),
          h("div", {}, h("dt", { text: "Tokens" }), h("dd", { text: formatCount(sum((r) => r.prompt_tokens) + sum((r) => r.completion_tokens)) })),
          h("div", {}, h("dt", { text: "Cost" }), h("dd", { text: formatCost(sum((r) => r.cost_usd)) }))
        )
      );
    })
  );

  page.saved.textContent = `${formatCount(total((r) => r.saved_tokens))} tokens saved by early exit`;
  fillFailures(page.failures, Array.isArray(body?.failures) ? body.failures : []);
  fillUsageTable(page.table, rows);
}

function fillFailures(table, failures) {
  const rows = failures.map((f) => h("tr", {}, h("td", { text: f.reason }), h("td", { class: "num", text: formatCount(f.count) })));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colSpan: 2, class: "none muted", text: "No failures" })));
  table.replaceChildren(
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Reason" }), h("th", { scope: "col", class: "num", text: "Count" }))),
    h("tbody", {}, rows)
  );
}

function fillUsageTable(table, rows) {
  const head = ["Day", "Model", "Kind", "Requests", "Failed", "Tokens", "Cost"];
  const sorted = [...rows].sort((a, b) => String(b.day).localeCompare(String(a.day)) || (b.cost_usd || 0) - (a.cost_usd || 0));
  const body = sorted.map((r) =>
    h(
      "tr",
      {},
      h("td", { class: "nowrap", text: r.day }),
      h("td", { text: r.model }),
      h("td", { text: r.kind }),
      h("td", { class: "num", text: formatCount(r.requests) }),
      h("td", { class: "num", text: formatCount(r.failed) }),
      h("td", { class: "num", text: formatCount((r.prompt_tokens || 0) + (r.completion_tokens || 0)), title: `${formatCount(r.prompt_tokens)} prompt + ${formatCount(r.completion_tokens)} completion` }),
      h("td", { class: "num", text: formatCost(r.cost_usd) })
    )
  );
  if (!body.length) body.push(h("tr", {}, h("td", { colSpan: head.length, class: "none muted", text: "No usage in this range." })));
  table.replaceChildren(
    h("caption", { class: "visually-hidden", text: "Usage per day and model (the chart's figures)" }),
    h("thead", {}, h("tr", {}, head.map((name, i) => h("th", { scope: "col", class: i >= 3 ? "num" : "", text: name })))),
    h("tbody", {}, body)
  );
}

// ---- the chart -----------------------------------------------------------------------------------

/** Every UTC day of the range (so quiet days show as gaps), plus any day the rows name. */
function daysOf(body) {
  const days = new Set();
  const since = Number(body?.since);
  const until = Number(body?.until);
  if (Number.isFinite(since) && Number.isFinite(until) && until > since && (until - since) / DAY_S <= 400) {
    for (let t = startOfDay(since); t < until; t += DAY_S) days.add(dayLabel(t));
  }
  for (const r of rowsOf(body)) days.add(String(r.day));
  return [...days].sort();
}

function drawChart(page, body) {
  const rows = rowsOf(body);
  page.chartEmpty.hidden = rows.length > 0;
  page.canvas.parentElement.hidden = rows.length === 0;
  const Chart = window.Chart;
  if (!rows.length || !Chart) return null;

  const days = daysOf(body);
  const models = [...new Set(rows.map((r) => String(r.model)))].sort();
  const datasets = models.map((model, i) => {
    const perDay = new Map();
    for (const r of rows.filter((row) => row.model === model)) {
      perDay.set(String(r.day), (perDay.get(String(r.day)) || 0) + (Number(r.cost_usd) || 0));
    }
    return {
      label: model,
      data: days.map((day) => perDay.get(day) ?? 0),
      backgroundColor: PALETTE[i % PALETTE.length],
      borderRadius: 3,
      maxBarThickness: 28,
    };
  });

  const css = getComputedStyle(document.documentElement);
  const text = css.getPropertyValue("--muted").trim() || "#666";
  const grid = css.getPropertyValue("--border").trim() || "#ddd";
  Chart.defaults.font.family = css.getPropertyValue("--font").trim() || "system-ui, sans-serif";

  return new Chart(page.canvas, {
    type: "bar",
    data: { labels: days, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: true, ticks: { color: text, maxRotation: 0, autoSkip: true }, grid: { display: false } },
        y: { stacked: true, beginAtZero: true, ticks: { color: text, callback: (v) => `$${Number(Number(v).toFixed(6))}` }, grid: { color: grid } },
      },
      plugins: {
        legend: { position: "bottom", labels: { color: text, boxWidth: 12 } },
        tooltip: {
          callbacks: { label: (ctx) => `${ctx.dataset.label}: ${formatCost(ctx.parsed.y)}` },
          filter: (item) => item.parsed.y > 0,
        },
      },
    },
  });
}
