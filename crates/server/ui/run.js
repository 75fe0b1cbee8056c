// A stored run (/runs/{id}): its figures and attempts, then the same run view as the
// Playground, rebuilt from the record.

import { getJSON, isAbort } from "/ui/api.js";
import { h, fill, showError, formatCost, formatCount, formatMs, formatTime } from "/ui/dom.js";
import { runFromRecord, questionOf } from "/ui/state.js";
import { renderRun } from "/ui/render.js";

export const title = "Run";

export function mount(root, params) {
  const id = params.id;
  const controller = new AbortController();
  root.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("p", { class: "crumbs" }, h("a", { href: "/runs", text: "← History" })),
      h("h1", { text: "Run" }),
      h("p", { class: "muted run-id", text: id })
    ),
    h("p", { id: "run-loading", class: "muted", text: "Loading…" })
  );

  async function load() {
    try {
      const record = await getJSON(`/v1/runs/${encodeURIComponent(id)}`, {}, { signal: controller.signal });
      show(root, record);
    } catch (error) {
      if (isAbort(error)) return;
      root.querySelector("#run-loading")?.remove();
      showError(error.message);
    }
  }
  load();
  return { unmount: () => controller.abort() };
}

function show(root, record) {
  const run = runFromRecord(record);
  const question = questionOf(record.request);
  const result = h("div", { id: "result", class: "result" });
  fill(
    root,
    h(
      "div",
      { class: "page-head" },
      h("p", { class: "crumbs" }, h("a", { href: "/runs", text: "← History" })),
      h("h1", { text: `Run ${formatTime(record.created_ms)}` }),
      h("p", { class: "muted run-id", text: record.id })
    ),
    summary(record),
    record.request ? null : h("p", { id: "content-note", class: "note", text: "Content was not kept: this gateway stores figures only, not questions or answers." }),
    question !== null
      ? h("section", { class: "block question-block", attrs: { "aria-labelledby": "question-title" } }, h("h2", { id: "question-title", text: "Question" }), h("p", { id: "question-view", class: "question-text", text: question }))
      : null,
    result,
    attempts(record.attempts || [])
  );
  renderRun(result, run, { permalink: true });
}

function summary(record) {
  const failed = record.status >= 400 || Boolean(record.error_kind);
  const status = record.error_kind ? `${record.status} · ${record.error_kind}` : String(record.status);
  const items = [
    ["Status", h("span", { class: `badge ${failed ? "badge-failed" : "badge-done"}`, text: status })],
    ["Model", record.model],
    ["Answered by", record.answered_by ?? "—"],
    ["Kind", `${record.kind}${record.stream ? " · stream" : ""}`],
    ["Caller", record.caller ?? "—"],
    ["Latency", formatMs(record.latency_ms)],
    ["First token", formatMs(record.first_token_ms)],
    ["Gateway", formatMs(record.gateway_ms)],
    ["Tokens", `${formatCount((record.prompt_tokens || 0) + (record.completion_tokens || 0))} (${formatCount(record.prompt_tokens)} + ${formatCount(record.completion_tokens)})`],
    ["Cost", formatCost(record.cost_usd)],
  ];
  if (record.saved_tokens) items.push(["Saved", `${formatCount(record.saved_tokens)} tokens`]);
  const list = h(
    "dl",
    { id: "run-summary", class: "summary-grid" },
    items.map(([label, value]) => h("div", {}, h("dt", { text: label }), h("dd", {}, value)))
  );
  const error = record.error ? h("p", { id: "run-error", class: "reason" }, h("strong", { text: "Error" }), h("span", { text: record.error })) : null;
  return h("section", { class: "card summary", attrs: { "aria-label": "Summary" } }, list, error);
}

const NUMERIC = new Set(["Retry", "Status", "Elapsed"]);

function attempts(rows) {
  const head = ["Model", "Provider", "Retry", "Status", "Reason", "Elapsed"];
  const body = rows.map((a) =>
    h(
      "tr",
      { class: a.reason && a.reason !== "ok" ? "failed" : "" },
      h("td", { text: a.model }),
      h("td", { text: a.provider }),
      h("td", { class: "num", text: a.retry }),
      h("td", { class: "num", text: a.status }),
      h("td", { text: a.reason }),
      h("td", { class: "num", text: formatMs(a.elapsed_ms) })
    )
  );
  if (!body.length) body.push(h("tr", {}, h("td", { colSpan: head.length, class: "none muted", text: "none" })));
  return h(
    "section",
    { class: "block", attrs: { "aria-labelledby": "attempts-title" } },
    h("h2", { id: "attempts-title", text: "Attempts" }),
    h(
      "div",
      { class: "table-wrap card flush" },
      h("table", { id: "attempts", class: "data-table" }, h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col", class: NUMERIC.has(name) ? "num" : "", text: name })))), h("tbody", {}, body))
    )
  );
}
