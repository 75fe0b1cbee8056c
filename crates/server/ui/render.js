// The run view shared by the Playground and the /runs/{id} permalink: renderRun(root, run)
// (re)draws a run state (see state.js). Each part is redrawn only when its data changed, so
// a live stream can call this every animation frame without losing focus or open <details>.

import { h, fill, changed, formatCost, formatCount, formatMs } from "/ui/dom.js";
import { renderMarkdown, linkCitations } from "/ui/markdown.js";

const lastRun = new WeakMap(); // root -> the run last drawn there (for the raw toggle)

/** Draws `run` into `root`. options.permalink: the view is the stored run's own page. */
export function renderRun(root, run, options = {}) {
  // A new run starts from a fresh view: no columns or cached parts of the previous one.
  if (!root.querySelector(".run-view") || lastRun.get(root)?.run !== run) root.replaceChildren(skeleton(root));
  lastRun.set(root, { run, options });
  const fusion = run.mode === "fusion";
  const showRaw = root.dataset.showRaw === "true";

  renderStatus(root.querySelector("#run-status"), run);
  root.querySelector("#panel-block").hidden = !fusion;
  root.querySelector("#analysis").hidden = !fusion;
  root.querySelector("#stages").hidden = !fusion;
  if (fusion) {
    renderMembers(root.querySelector("#members"), run, showRaw);
    renderStages(root.querySelector("#stages"), run);
    renderAnalysis(root.querySelector("#analysis"), run);
  }
  const rawButton = root.querySelector("#show-raw");
  rawButton.setAttribute("aria-pressed", String(showRaw)); // a toggle keeps one label
  rawButton.disabled = !run.members.some((m) => m.content);
  renderAnswer(root, run);
  renderTotals(root.querySelector("#totals"), run);
  renderPermalink(root.querySelector("#permalink-line"), run, options);
}

function skeleton(root) {
  const rawButton = h("button", {
    type: "button",
    id: "show-raw",
    class: "button secondary small",
    text: "Show raw answers",
    attrs: { "aria-pressed": "false" },
  });
  rawButton.addEventListener("click", () => {
    root.dataset.showRaw = String(root.dataset.showRaw !== "true");
    const last = lastRun.get(root);
    if (last) renderRun(root, last.run, last.options);
  });
  return h(
    "div",
    { class: "run-view" },
    h("p", { id: "run-status", class: "run-status", attrs: { role: "status" } }),
    h(
      "section",
      { id: "panel-block", class: "block", attrs: { "aria-labelledby": "panel-title" } },
      h("div", { class: "block-head" }, h("h2", { id: "panel-title", text: "Panel" }), rawButton),
      h("div", { id: "members", class: "members" })
    ),
    h("ul", { id: "stages", class: "stages", attrs: { "aria-label": "Stages" } }),
    h(
      "section",
      { id: "answer-block", class: "block answer-block", attrs: { "aria-labelledby": "answer-title" } },
      h("div", { class: "block-head" }, h("h2", { id: "answer-title", text: "Answer" }), h("span", { id: "answered-by", class: "muted" })),
      h("p", { id: "answer-placeholder", class: "muted placeholder" }),
      h("div", { id: "answer", class: "markdown" }),
      h("h3", { id: "sources-title", class: "small-title", text: "Sources", hidden: true }),
      h("ol", { id: "sources", class: "sources", hidden: true })
    ),
    h("p", { id: "totals", class: "totals" }),
    h("p", { id: "permalink-line", class: "permalink-line", hidden: true }),
    analysisSkeleton()
  );
}

// ---- run status ------------------------------------------------------------------------

const PHASE_TEXT = { running: "Running…", done: "Done", stopped: "Stopped", failed: "Failed" };

function renderStatus(node, run) {
  const text = run.phase === "failed" && run.error ? `Failed: ${run.error}` : PHASE_TEXT[run.phase];
  if (!changed(node, text)) return;
  node.textContent = text;
  node.dataset.phase = run.phase;
}

// ---- members ---------------------------------------------------------------------------

/** The model name and slot of an analysis reference: "#1" is slot 0. */
export function modelRef(run, ref) {
  const match = /^#(\d+)$/.exec(String(ref ?? "").trim());
  const m = match ? run.members[Number(match[1]) - 1] : null;
  return m ? `${m.model} (#${m.slot + 1})` : String(ref ?? "");
}

function renderMembers(container, run, showRaw) {
  for (const m of run.members) {
    let section = container.querySelector(`:scope > section[data-slot="${m.slot}"]`);
    if (!section) {
      section = h("section", {
        class: "member",
        dataset: { slot: m.slot },
        attrs: { "aria-labelledby": `member-title-${m.slot}` },
      });
      container.append(section);
    }
    if (!changed(section, JSON.stringify([m, showRaw]))) continue;
    const wasOpen = section.querySelector("details")?.open ?? false;
    section.dataset.status = m.status;
    section.replaceChildren(...memberParts(m, showRaw, wasOpen));
  }
}

function memberStatusText(m) {
  if (m.status === "running" && m.tokens !== null) return `running · ${formatCount(m.tokens)} tokens`;
  return m.status;
}

function memberParts(m, showRaw, wasOpen) {
  const parts = [
    h(
      "h3",
      { class: "member-title", id: `member-title-${m.slot}` },
      h("span", { class: "model", text: m.model }),
      h("span", { class: "slot", text: `#${m.slot + 1}` })
    ),
    h("p", { class: `status status-${m.status}`, text: memberStatusText(m) }),
  ];
  if (m.tools.length) {
    parts.push(
      h(
        "ul",
        { class: "tools", attrs: { "aria-label": "Tool calls" } },
        m.tools.map((t) =>
          h("li", {}, h("span", { class: "tool", text: t.tool }), t.detail ? h("span", { class: "tool-arg", text: t.detail }) : null)
        )
      )
    );
  }
  if ((m.status === "failed" || m.status === "timeout") && (m.reason || m.message)) {
    const reason = [m.reason, m.httpStatus ? `HTTP ${m.httpStatus}` : null].filter(Boolean).join(" · ");
    parts.push(h("p", { class: "reason" }, h("strong", { text: reason || "failed" }), m.message ? h("span", { text: m.message }) : null));
  }
  parts.push(memberFigures(m));
  if (m.content) parts.push(memberAnswer(m, showRaw, wasOpen));
  return parts;
}

function memberFigures(m) {
  const items = [];
  const add = (label, value) => items.push(h("div", {}, h("dt", { text: label }), h("dd", { text: value })));
  if (m.latencyMs !== null) add("Latency", formatMs(m.latencyMs));
  if (m.tokens !== null || m.usage) add("Tokens", formatCount(m.usage?.completion_tokens ?? m.tokens));
  if (m.usage && m.usage.cost !== undefined) add("Cost", formatCost(m.usage.cost));
  const sourceCount = m.sources?.length || m.sourceCount;
  if (sourceCount) add("Sources", formatCount(sourceCount));
  return h("dl", { class: "figures" }, items);
}

function memberAnswer(m, showRaw, wasOpen) {
  const rendered = renderMarkdown(h("div", { class: "answer markdown" }), m.content);
  rendered.hidden = showRaw;
  const raw = h("pre", { class: "raw", text: m.content, hidden: !showRaw });
  const sources = m.sources?.length
    ? h(
        "ul",
        { class: "member-sources", attrs: { "aria-label": "Sources this member read" } },
        m.sources.map((s) => h("li", {}, sourceLink(s.url, s.title), s.via ? h("span", { class: "muted", text: ` · ${s.via}` }) : null))
      )
    : null;
  const details = h("details", { class: "member-answer" }, h("summary", { text: "Answer" }), rendered, raw, sources);
  details.open = showRaw || wasOpen;
  return details;
}

/** A safe external link: http(s) only, otherwise plain text. */
function sourceLink(url, title) {
  const text = String(title || url || "");
  if (!/^https?:/i.test(String(url || ""))) return h("span", { text });
  return h("a", { href: url, text, target: "_blank", rel: "noopener noreferrer nofollow" });
}

// ---- stages ----------------------------------------------------------------------------

function stageLine(name, label, state, detail) {
  return h(
    "li",
    { class: `stage stage-${state}`, dataset: { stage: name } },
    h("span", { class: "stage-name", text: label }),
    h("span", { class: `badge badge-${state}`, text: state }),
    detail ? h("span", { class: "stage-detail", text: detail }) : null
  );
}

function stageDetail(stage) {
  if (stage.state === "running") return "started";
  if (stage.state === "failed") return stage.failureReason ? `failed: ${stage.failureReason}` : "failed";
  if (stage.latencyMs !== undefined && stage.latencyMs !== null) return `done in ${formatMs(stage.latencyMs)}`;
  return "";
}

function slotList(run, slots) {
  return (slots || []).map((slot) => modelRef(run, `#${Number(slot) + 1}`)).join(", ");
}

function renderStages(list, run) {
  const report = run.report;
  const key = JSON.stringify([run.prefetch, run.fusionCalled, run.judge, run.synthesis, run.earlyExit, run.phase,
    report?.tools_note, report?.failed_models, report?.failure_reason, run.members.map((m) => m.model)]);
  if (!changed(list, key)) return;
  const lines = [];
  if (run.fusionCalled) lines.push(stageLine("fusion-called", "Fusion tool", "done", `called by ${run.fusionCalled}`));
  if (run.prefetch) {
    const p = run.prefetch;
    const detail = p.state === "running" ? "searching" : p.error ? `failed: ${p.error}` : `${formatCount(p.sources)} sources in ${formatMs(p.latencyMs)}`;
    lines.push(stageLine("prefetch", "Research", p.state, detail));
  }
  if (run.earlyExit) {
    const cancelled = slotList(run, run.earlyExit.cancelled);
    const detail = `${run.earlyExit.reason}${cancelled ? ` — cancelled ${cancelled}` : ""}`;
    lines.push(stageLine("early-exit", "Early exit", "note", detail));
  }
  if (run.judge) lines.push(stageLine("judge", `Judge ${run.judge.model || ""}`.trim(), run.judge.state, stageDetail(run.judge)));
  if (run.synthesis) {
    lines.push(stageLine("synthesis", `Synthesis ${run.synthesis.model || ""}`.trim(), run.synthesis.state, stageDetail(run.synthesis)));
  }
  if (report?.tools_note) lines.push(stageLine("tools-note", "Research note", "note", report.tools_note));
  if (report?.failed_models?.length) {
    lines.push(stageLine("degraded", "Degraded", "failed", `failed: ${report.failed_models.join(", ")}`));
  }
  if (report?.failure_reason && run.judge?.failureReason !== report.failure_reason) {
    lines.push(stageLine("failure", "Failure", "failed", report.failure_reason));
  }
  if (!lines.length && run.phase === "running") lines.push(stageLine("panel", "Panel", "running", "waiting for the members"));
  list.replaceChildren(...lines);
}

// ---- analysis --------------------------------------------------------------------------

function analysisSkeleton() {
  const part = (title, id, tag = "ul") =>
    h("div", { class: "analysis-part" }, h("h3", { text: title, id: `${id}-title` }), h(tag, { id, attrs: { "aria-labelledby": `${id}-title` } }));
  return h(
    "section",
    { id: "analysis", class: "block analysis", attrs: { "aria-labelledby": "analysis-title" } },
    h("h2", { id: "analysis-title", text: "Analysis" }),
    h("div", { id: "strategy-detail", class: "strategy-detail", hidden: true }),
    h("div", { id: "analysis-note", class: "analysis-note muted" }),
    h(
      "div",
      { id: "analysis-body", class: "analysis-body", hidden: true },
      part("Consensus", "consensus"),
      h(
        "div",
        { class: "analysis-part wide" },
        h("h3", { text: "Contradictions", id: "contradictions-title" }),
        h("div", { id: "contradictions", class: "table-wrap" }, h("table", { class: "data-table", attrs: { "aria-labelledby": "contradictions-title" } }))
      ),
      part("Partial coverage", "coverage"),
      part("Unique insights", "insights"),
      part("Blind spots", "blind-spots")
    )
  );
}

function renderAnalysis(section, run) {
  const report = run.report;
  const key = JSON.stringify([report?.analysis, run.analysis, report?.vote, report?.selection, report?.agreement,
    report?.judge_attempts, report?.failure_reason, run.phase, run.members.map((m) => m.model)]);
  if (!changed(section, key)) return;
  const note = section.querySelector("#analysis-note");
  const body = section.querySelector("#analysis-body");
  renderStrategy(section.querySelector("#strategy-detail"), run);
  body.hidden = true;
  if (!report && run.analysis) {
    note.replaceChildren();
    body.hidden = false;
    fillAnalysis(section, run, run.analysis);
    return;
  }
  if (!report) {
    note.replaceChildren(run.phase === "running" ? "The analysis appears once the judge is done." : "No analysis: the run ended without a report.");
    return;
  }
  if (!("analysis" in report)) {
    note.replaceChildren("The analysis was not kept: this gateway stores no content.");
    return;
  }
  if (!report.analysis) {
    fill(note, whyNoAnalysis(report));
    return;
  }
  note.replaceChildren();
  body.hidden = false;
  fillAnalysis(section, run, report.analysis);
}

function whyNoAnalysis(report) {
  let text = "No analysis: the judge was not run.";
  if (report.failure_reason) text = `No analysis: the judge gave none (${report.failure_reason}).`;
  else if (report.vote?.outcome === "majority") text = "No analysis: the vote decided, so the judge was not needed.";
  else if (report.agreement?.agreed) text = "No analysis: the panel agreed, so the judge was skipped.";
  else if (report.judge_attempts?.some((a) => !a.ok)) text = "No analysis: the judge failed.";
  const attempts = (report.judge_attempts || []).map((a) =>
    h("li", { text: `${a.model}${a.repair ? " (repair)" : ""}: ${a.ok ? "ok" : "failed"}${a.error ? ` — ${a.error}` : ""}` })
  );
  return [h("p", { text }), attempts.length ? h("ul", { id: "judge-attempts", class: "plain-list" }, attempts) : null];
}

function listOrNone(list, items) {
  list.replaceChildren(...(items.length ? items : [h("li", { class: "none muted", text: "none" })]));
}

function modelTag(run, ref) {
  return h("span", { class: "tag", text: modelRef(run, ref) });
}

function fillAnalysis(section, run, analysis) {
  const strings = (value) => (Array.isArray(value) ? value : []);
  listOrNone(section.querySelector("#consensus"), strings(analysis.consensus).map((c) => h("li", { text: c })));
  renderContradictions(section.querySelector("#contradictions table"), run, strings(analysis.contradictions));
  listOrNone(
    section.querySelector("#coverage"),
    strings(analysis.partial_coverage).map((c) =>
      h("li", {}, h("span", { text: c.point }), h("span", { class: "tags" }, strings(c.models).map((ref) => modelTag(run, ref))))
    )
  );
  listOrNone(
    section.querySelector("#insights"),
    strings(analysis.unique_insights).map((i) => h("li", {}, modelTag(run, i.model), h("span", { text: ` ${i.insight}` })))
  );
  listOrNone(section.querySelector("#blind-spots"), strings(analysis.blind_spots).map((b) => h("li", { text: b })));
}

/** Which member column a stance belongs to: "#N", or a model name; -1 for neither. */
function stanceColumn(run, ref) {
  const match = /^#(\d+)$/.exec(String(ref ?? "").trim());
  if (match) {
    const slot = Number(match[1]) - 1;
    return slot < run.members.length ? slot : -1;
  }
  return run.members.findIndex((m) => m.model === ref);
}

function renderContradictions(table, run, contradictions) {
  const columns = run.members;
  const placed = contradictions.map((c) => {
    const cells = columns.map(() => []);
    const other = [];
    for (const s of c.stances || []) {
      const column = stanceColumn(run, s.model);
      if (column >= 0) cells[column].push(s.stance);
      else other.push(`${s.model}: ${s.stance}`);
    }
    return { topic: c.topic, cells, other };
  });
  const hasOther = placed.some((p) => p.other.length);
  const head = h(
    "tr",
    {},
    h("th", { scope: "col", text: "Topic" }),
    columns.map((m) => h("th", { scope: "col", text: `${m.model} (#${m.slot + 1})` })),
    hasOther ? h("th", { scope: "col", text: "Other" }) : null
  );
  const rows = placed.map((p) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", text: p.topic }),
      p.cells.map((stances) => h("td", { text: stances.join(" / ") })),
      hasOther ? h("td", { text: p.other.join(" / ") }) : null
    )
  );
  if (!rows.length) {
    rows.push(h("tr", {}, h("td", { class: "none muted", colSpan: columns.length + 1, text: "none" })));
  }
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}

// ---- strategy details (vote / select / auto) ---------------------------------------------

function renderStrategy(box, run) {
  const report = run.report;
  const parts = [];
  if (report?.vote) parts.push(...voteParts(run, report.vote));
  if (report?.selection) parts.push(...selectionParts(run, report.selection));
  if (report?.agreement) parts.push(...agreementParts(run, report.agreement));
  box.hidden = !parts.length;
  fill(box, parts);
}

const VOTE_OUTCOME = {
  majority: "a majority answer was returned as written",
  tie: "no majority: the judge and the synthesis decided",
  no_closed_form: "too few answers had a closed form: the judge and the synthesis decided",
};

function voteParts(run, vote) {
  const ballots = Array.isArray(vote.ballots) ? vote.ballots : [];
  const winner = vote.winner ? `Winner: ${vote.winner} with ${vote.votes} of ${ballots.length} votes` : "No winner";
  const outcome = VOTE_OUTCOME[vote.outcome] || vote.outcome || "";
  const rows = ballots.map((ballot, slot) =>
    h(
      "tr",
      { class: ballot !== null && ballot === vote.winner ? "winner" : "" },
      h("th", { scope: "row", text: modelRef(run, `#${slot + 1}`) }),
      h("td", { text: ballot ?? "— (no closed answer)" })
    )
  );
  return [
    h("h3", { text: "Vote" }),
    h("p", { id: "vote-winner", text: outcome ? `${winner} — ${outcome}.` : `${winner}.` }),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { id: "ballots", class: "data-table compact" }, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Member" }), h("th", { scope: "col", text: "Ballot" }))), h("tbody", {}, rows))
    ),
  ];
}

function selectionParts(run, selection) {
  const chosen = Number.isInteger(selection.slot) ? modelRef(run, `#${selection.slot + 1}`) : modelRef(run, selection.label);
  return [
    h("h3", { text: "Selection" }),
    h("p", { id: "selection" }, h("strong", { text: `Chose ${chosen}` }), selection.judge ? ` (judge ${selection.judge})` : "", selection.reason ? `: ${selection.reason}` : "."),
  ];
}

function agreementParts(run, agreement) {
  const saved = agreement.saved || {};
  const savedTokens = (saved.prompt_tokens || 0) + (saved.completion_tokens || 0);
  const group = slotList(run, agreement.group);
  // Records made before exit_quorum existed have no quorum.
  const needed = agreement.quorum ? `${agreement.quorum} needed, ` : "";
  const text = agreement.agreed
    ? `The panel agreed (${group}; ${needed}threshold ${agreement.threshold}); the answer of ${modelRef(run, `#${Number(agreement.answer_slot) + 1}`)} was returned.`
    : `The panel did not agree (${needed}threshold ${agreement.threshold}); the run went on as fuse.`;
  const savedText = agreement.agreed
    ? `Saved: ${formatCount(savedTokens)} tokens (${formatCount(saved.prompt_tokens || 0)} prompt + ${formatCount(saved.completion_tokens || 0)} completion), ${formatCount(saved.cancelled_members || 0)} member(s) cancelled.`
    : null;
  return [h("h3", { text: "Auto" }), h("p", { id: "agreement", text }), savedText ? h("p", { id: "agreement-saved", text: savedText }) : null];
}

// ---- answer, sources, totals, permalink ----------------------------------------------------

/** The numbered sources: the report's, or the stream's url_citation annotations. */
function answerSources(run) {
  if (run.report?.sources?.length) return run.report.sources;
  const seen = new Map();
  for (const a of run.annotations) {
    const c = a?.url_citation;
    if (c?.url && !seen.has(c.url)) seen.set(c.url, { n: seen.size + 1, url: c.url, title: c.title });
  }
  return [...seen.values()];
}

function renderAnswer(root, run) {
  const answer = root.querySelector("#answer");
  const sources = answerSources(run);
  const unverified = run.report?.unverified_citations || [];
  const placeholder = root.querySelector("#answer-placeholder");
  placeholder.hidden = Boolean(run.answer);
  placeholder.textContent = answerPlaceholder(run);
  const answeredBy = root.querySelector("#answered-by");
  answeredBy.textContent = run.answeredBy ? `by ${run.answeredBy}` : "";

  if (changed(answer, JSON.stringify([run.answer, sources, unverified]))) {
    renderMarkdown(answer, run.answer);
    if (run.report) linkCitations(answer, sources, unverified);
  }
  const list = root.querySelector("#sources");
  if (changed(list, JSON.stringify([sources, unverified]))) {
    const flagged = new Set(unverified.map(String));
    list.replaceChildren(
      ...sources.map((s) => {
        const link = sourceLink(s.url, s.title || s.url);
        link.classList.add("source-link");
        if (flagged.has(String(s.url))) {
          link.classList.add("unverified");
          link.title = "no panel member retrieved this source";
        }
        return h("li", { value: s.n }, link, s.title ? h("span", { class: "source-url muted", text: s.url }) : null);
      })
    );
  }
  list.hidden = !sources.length;
  root.querySelector("#sources-title").hidden = !sources.length;
}

function answerPlaceholder(run) {
  if (run.phase === "running") return run.mode === "fusion" ? "The answer streams here once the panel and the judge are done." : "Waiting for the first tokens…";
  if (!run.contentKept) return "The answer was not kept: this gateway stores no content.";
  return "No answer.";
}

function renderTotals(node, run) {
  const key = JSON.stringify([run.phase, run.usage, run.wallMs, run.report?.timings, run.report?.usage, run.earlyExit, run.members.map((m) => m.status)]);
  if (!changed(node, key)) return;
  if (run.phase === "running") {
    node.replaceChildren(h("span", { class: "muted", text: "Totals appear when the run ends." }));
    return;
  }
  const usage = run.usage || {};
  const stageCosts = stageCostText(run);
  const prompt = usage.prompt_tokens ?? 0;
  const completion = usage.completion_tokens ?? 0;
  const items = [
    h("span", { class: "total-cost", text: `Cost ${formatCost(usage.cost)}`, title: stageCosts || "" }),
    h("span", { text: `${formatCount(prompt + completion)} tokens (${formatCount(prompt)} prompt + ${formatCount(completion)} completion)` }),
    h("span", { text: `Wall ${formatMs(run.report?.timings?.total_ms ?? run.wallMs)}` }),
  ];
  if (run.mode === "fusion" && run.members.length) {
    const answered = run.members.filter((m) => m.status === "done").length;
    items.push(h("span", { text: `Panel ${answered}/${run.members.length} answered` }));
  }
  if (run.earlyExit) items.push(h("span", { text: `Early exit: ${run.earlyExit.reason}` }));
  if (run.report?.strategy) items.push(h("span", { text: `Strategy ${run.report.strategy}` }));
  const line = [];
  items.forEach((item, i) => line.push(i ? h("span", { class: "sep", text: " · ", attrs: { "aria-hidden": "true" } }) : null, item));
  fill(node, line, stageCosts ? h("small", { id: "stage-costs", class: "muted", text: stageCosts }) : null);
}

function stageCostText(run) {
  const details = run.usage?.cost_details;
  const stages = run.report?.usage;
  const cost = (name) => details?.[name] ?? stages?.[name]?.cost;
  if (!details && !stages) return "";
  return ["panel", "judge", "synthesis"].map((name) => `${name} ${formatCost(cost(name) ?? 0)}`).join(" · ");
}

function renderPermalink(line, run, options) {
  const show = !options.permalink && run.phase !== "running" && Boolean(run.id);
  line.hidden = !show;
  if (!show || !changed(line, run.id)) return;
  line.replaceChildren(
    h("a", { id: "permalink", href: `/runs/${encodeURIComponent(run.id)}`, text: "Open in History" }),
    h("span", { class: "muted", text: ` ${run.id}` })
  );
}
