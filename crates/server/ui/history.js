// History (/runs): the run store, newest first, with filters and "load more" paging. The
// filters live in the page's query string so a filtered list can be bookmarked and reloaded.

import { getJSON, isAbort } from "/ui/api.js";
import { h, field, showError, clearError, formatCost, formatCount, formatMs, formatTime } from "/ui/dom.js";

export const title = "History";

const PAGE_SIZE = 50;
const DAY_S = 86_400;

export function mount(root) {
  const page = buildPage(root);
  fillFilters(page, new URLSearchParams(location.search));
  let controller = null;
  let cursor = null;

  async function load(append) {
    controller?.abort();
    controller = new AbortController();
    clearError();
    page.more.disabled = true;
    page.table.setAttribute("aria-busy", "true");
    try {
      const body = await getJSON("/v1/runs", { ...queryOf(page), cursor: append ? cursor : "", limit: PAGE_SIZE }, { signal: controller.signal });
      const runs = Array.isArray(body?.data) ? body.data : [];
      if (!append) page.rows.replaceChildren();
      page.rows.append(...runs.map(runRow));
      cursor = body?.next_cursor ?? null;
      page.more.hidden = !cursor;
      page.empty.hidden = page.rows.children.length > 0;
      page.tableBox.hidden = page.rows.children.length === 0;
    } catch (error) {
      if (isAbort(error)) return;
      showError(error.message);
      if (!append) {
        page.rows.replaceChildren();
        page.tableBox.hidden = true;
        page.more.hidden = true;
        page.empty.hidden = true;
      }
    } finally {
      page.more.disabled = false;
      page.table.removeAttribute("aria-busy");
    }
  }

  page.form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(history.state, "", urlFor(page));
    load(false);
  });
  page.more.addEventListener("click", () => load(true));
  load(false);
  return {
    unmount: () => controller?.abort(),
  };
}

function buildPage(root) {
  const input = (id, type, extra = {}) => h("input", { id, type, ...extra });
  const model = input("filter-model", "text", { placeholder: "e.g. quorate/fusion", autocomplete: "off" });
  const status = input("filter-status", "number", { min: 100, max: 599, step: 1, placeholder: "e.g. 200" });
  const caller = input("filter-caller", "text", { autocomplete: "off" });
  const since = input("filter-since", "date");
  const until = input("filter-until", "date");
  const apply = h("button", { type: "submit", id: "filter-apply", class: "button primary", text: "Apply" });
  const form = h(
    "form",
    { id: "filters", class: "card form filters", attrs: { "aria-label": "Filter runs", novalidate: true } },
    h(
      "div",
      { class: "row filters-row" },
      field("Model", model),
      field("Status", status),
      field("Caller", caller),
      field("Since (UTC)", since),
      field("Until (UTC, inclusive)", until),
      h("div", { class: "field field-action" }, apply)
    )
  );
  const rows = h("tbody");
  const table = h(
    "table",
    { id: "runs-table", class: "data-table runs-table" },
    h("caption", { class: "visually-hidden", text: "Runs, newest first" }),
    h(
      "thead",
      {},
      h("tr", {}, ["Time", "Model", "Kind", "Status", "Latency", "Tokens", "Cost"].map((name, i) => h("th", { scope: "col", class: i >= 4 ? "num" : "", text: name })))
    ),
    rows
  );
  const empty = h("p", { id: "runs-empty", class: "empty muted", text: "No runs match these filters.", hidden: true });
  const tableBox = h("div", { class: "table-wrap card flush", hidden: true }, table);
  const more = h("button", { type: "button", id: "more", class: "button secondary", text: "Load more", hidden: true });
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", { text: "History" }), h("p", { class: "muted", text: "Every request the gateway kept, newest first." })),
    form,
    tableBox,
    empty,
    h("div", { class: "actions" }, more)
  );
  return { form, model, status, caller, since, until, table, tableBox, rows, empty, more };
}

/** "2026-11-30" as unix seconds at 00:00 UTC, or "" when empty/invalid. */
function dayToUnix(day) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day || "");
  if (!match) return "";
  return Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) / 1000;
}

/** The API query of the filters. `until` is exclusive in the API, so the chosen day is
 * included by asking until the start of the next day. */
function queryOf(page) {
  const until = dayToUnix(page.until.value);
  return {
    model: page.model.value.trim(),
    status: page.status.value.trim(),
    caller: page.caller.value.trim(),
    since: dayToUnix(page.since.value),
    until: until === "" ? "" : until + DAY_S,
  };
}

const FILTER_PARAMS = ["model", "status", "caller", "since", "until"];

function fillFilters(page, params) {
  for (const name of FILTER_PARAMS) page[name].value = params.get(name) ?? "";
}

function urlFor(page) {
  const params = new URLSearchParams();
  for (const name of FILTER_PARAMS) {
    const value = page[name].value.trim();
    if (value) params.set(name, value);
  }
  return params.toString() ? `/runs?${params}` : "/runs";
}

function runRow(run) {
  const failed = run.status >= 400 || Boolean(run.error_kind);
  const status = run.error_kind ? `${run.status} · ${run.error_kind}` : String(run.status);
  const tokens = (run.prompt_tokens || 0) + (run.completion_tokens || 0);
  return h(
    "tr",
    { class: failed ? "failed" : "" },
    h("td", {}, h("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: formatTime(run.created_ms), title: run.id })),
    h("td", {}, h("span", { text: run.model }), run.answered_by && run.answered_by !== run.model ? h("small", { class: "muted as-block", text: `→ ${run.answered_by}` }) : null),
    h("td", {}, h("span", { class: `kind kind-${run.kind}`, text: run.kind })),
    h("td", {}, h("span", { class: `badge ${failed ? "badge-failed" : "badge-done"}`, text: status })),
    h("td", { class: "num", text: formatMs(run.latency_ms) }),
    h("td", { class: "num", text: formatCount(tokens), title: `${formatCount(run.prompt_tokens)} prompt + ${formatCount(run.completion_tokens)} completion` }),
    h("td", { class: "num", text: formatCost(run.cost_usd) })
  );
}
