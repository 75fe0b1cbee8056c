// The "run state": everything the run view shows, built either from a live stream (Playground)
// or from a stored record (the /runs/{id} permalink). render.js only ever reads this object.

/**
 * mode: "fusion" | "single". members: the panel slots the UI knows (custom panels are known
 * before the first event; presets become known as members start).
 */
export function newRun({ mode, model = null, members = [] } = {}) {
  return {
    id: null,
    mode,
    model, // the model asked for
    answeredBy: null,
    phase: "running", // running | done | failed | stopped
    startedAt: performance.now(),
    wallMs: null,
    members: members.map((m, slot) => newMember(slot, m)),
    prefetch: null,
    judge: null,
    synthesis: null,
    fusionCalled: null,
    earlyExit: null,
    report: null,
    analysis: null, // the judge's analysis as soon as judge_done carries it
    answer: "",
    annotations: [],
    usage: null,
    error: null,
    contentKept: true,
  };
}

function newMember(slot, model) {
  return {
    slot,
    model: model || `member ${slot + 1}`,
    status: "waiting", // waiting | running | done | failed | timeout | cancelled
    tokens: null,
    tools: [], // [{tool, detail}]
    reason: null,
    message: null,
    latencyMs: null,
    usage: null,
    content: null,
    sources: [],
    toolCalls: null,
  };
}

function member(run, slot, model) {
  const index = Number(slot);
  while (run.members.length <= index) run.members.push(newMember(run.members.length, null));
  const m = run.members[index];
  if (model) m.model = model;
  return m;
}

/** One `chat.completion.chunk` of the stream. */
export function applyChunk(run, chunk) {
  if (chunk.id && !run.id) run.id = chunk.id;
  if (chunk.model && run.mode === "single") run.answeredBy = chunk.model;
  if (chunk.fusion_event) applyEvent(run, chunk.fusion_event);
  for (const choice of chunk.choices || []) {
    const delta = choice.delta || choice.message || {};
    if (typeof delta.content === "string") run.answer += delta.content;
    if (Array.isArray(delta.annotations)) run.annotations.push(...delta.annotations);
  }
  if (chunk.usage) run.usage = chunk.usage;
  if (chunk.fusion) applyReport(run, chunk.fusion);
}

/** The text shown for a tool call: the search query or the fetched URL. */
function toolDetail(args) {
  if (!args || typeof args !== "object") return "";
  return String(args.query ?? args.url ?? "");
}

/** One fusion progress event (live, or replayed from a stored record). */
export function applyEvent(run, event) {
  switch (event?.type) {
    case "fusion_called":
      run.fusionCalled = event.model;
      break;
    case "prefetch_started":
      run.prefetch = { state: "running" };
      break;
    case "prefetch_done":
      run.prefetch = {
        state: event.error ? "failed" : "done",
        sources: event.sources,
        error: event.error,
        latencyMs: event.latency_ms,
      };
      break;
    case "member_started": {
      const m = member(run, event.slot, event.model);
      m.status = "running";
      break;
    }
    case "member_tokens": {
      const m = member(run, event.slot);
      if (m.status === "waiting") m.status = "running";
      m.tokens = event.tokens;
      break;
    }
    case "member_tool_call":
      member(run, event.slot).tools.push({ tool: event.tool, detail: toolDetail(event.arguments) });
      break;
    case "member_done": {
      const m = member(run, event.slot, event.model);
      Object.assign(m, { status: "done", tokens: event.tokens, latencyMs: event.latency_ms });
      m.toolCalls = event.tool_calls ?? m.toolCalls;
      m.sourceCount = event.sources;
      if (typeof event.content === "string") m.content = event.content; // newer servers send it
      break;
    }
    case "member_failed": {
      const m = member(run, event.slot, event.model);
      m.status = event.reason === "timeout" ? "timeout" : "failed";
      Object.assign(m, { reason: event.reason, message: event.error, latencyMs: event.latency_ms });
      break;
    }
    case "panel_stopped":
      run.earlyExit = { reason: event.reason, cancelled: event.cancelled || [] };
      for (const slot of event.cancelled || []) member(run, slot).status = "cancelled";
      break;
    case "judge_started":
      run.judge = { model: event.model, state: "running" };
      break;
    case "judge_done":
      run.judge = {
        model: event.model,
        state: event.ok ? "done" : "failed",
        latencyMs: event.latency_ms,
        failureReason: event.failure_reason,
      };
      if (event.analysis) run.analysis = event.analysis; // shown before the final report
      break;
    case "synthesis_started":
      run.synthesis = { model: event.model, state: "running" };
      break;
    default:
      break; // events this UI does not know yet are ignored
  }
}

const MEMBER_STATUS = { ok: "done", failed: "failed", timeout: "timeout", cancelled: "cancelled" };

/** The final `fusion` report: it is the truth about every member and stage. */
export function applyReport(run, report) {
  if (!report || typeof report !== "object") return;
  run.report = report;
  for (const entry of report.panel || []) {
    const m = member(run, entry.slot, entry.model);
    m.status = MEMBER_STATUS[entry.status] || entry.status || m.status;
    m.content = entry.content ?? m.content;
    m.usage = entry.usage ?? m.usage;
    m.latencyMs = entry.latency_ms ?? m.latencyMs;
    m.sources = entry.sources || m.sources;
    m.toolCalls = entry.tool_calls ?? m.toolCalls;
    if (entry.usage?.completion_tokens !== undefined) m.tokens = entry.usage.completion_tokens;
    if (entry.error) {
      m.reason = entry.error.reason ?? m.reason;
      m.message = entry.error.message ?? m.message;
      m.httpStatus = entry.error.status ?? null;
    }
  }
  if (report.early_exit) run.earlyExit = report.early_exit;
  if (!run.judge && report.judge_attempts?.length) {
    const ok = report.judge_attempts.some((a) => a.ok);
    run.judge = {
      model: report.judge,
      state: ok ? "done" : "failed",
      latencyMs: report.timings?.judge_ms,
      failureReason: ok ? null : report.failure_reason,
    };
  }
  if (run.synthesis) {
    run.synthesis.state = report.failure_reason === "synthesis_failed" ? "failed" : "done";
    run.synthesis.latencyMs = report.timings?.synthesis_ms;
  } else if (report.timings?.synthesis_ms) {
    run.synthesis = { model: report.synthesizer, state: "done", latencyMs: report.timings.synthesis_ms };
  }
  if (report.synthesizer && !run.answeredBy) run.answeredBy = report.synthesizer;
}

/** Marks the end of a live run: members never heard from stay as they are. */
export function finishRun(run, phase, error = null) {
  run.phase = phase;
  run.error = error;
  if (run.wallMs === null) run.wallMs = performance.now() - run.startedAt;
  if (run.synthesis?.state === "running") {
    run.synthesis.state = phase === "done" ? "done" : phase;
  }
  if (run.judge?.state === "running" && phase !== "done") run.judge.state = phase;
}

/** The text of the last user message of a stored request (string or text parts). */
export function questionOf(request) {
  const messages = Array.isArray(request?.messages) ? request.messages : [];
  const last = [...messages].reverse().find((m) => m?.role === "user");
  if (!last) return null;
  if (typeof last.content === "string") return last.content;
  if (Array.isArray(last.content)) {
    return last.content
      .filter((part) => part?.type === "text" && typeof part.text === "string")
      .map((part) => part.text)
      .join("\n");
  }
  return null;
}

/** A run state rebuilt from `GET /v1/runs/{id}`. */
export function runFromRecord(record) {
  const run = newRun({ mode: record.kind === "fusion" ? "fusion" : "single", model: record.model });
  run.id = record.id;
  run.answeredBy = record.answered_by;
  for (const timed of record.events || []) applyEvent(run, timed.event);
  if (record.fusion) applyReport(run, record.fusion);
  run.answer = record.answer ?? "";
  run.contentKept = record.request !== null && record.request !== undefined;
  run.usage = {
    prompt_tokens: record.prompt_tokens,
    completion_tokens: record.completion_tokens,
    total_tokens: (record.prompt_tokens || 0) + (record.completion_tokens || 0),
    cost: record.cost_usd,
  };
  run.wallMs = record.latency_ms;
  const failed = record.status >= 400 || Boolean(record.error_kind) || Boolean(record.error);
  run.phase = failed ? "failed" : "done";
  run.error = record.error || record.error_kind || null;
  // A stored run is over: a stage still "running" never reported back.
  for (const stage of [run.judge, run.synthesis, run.prefetch]) {
    if (stage?.state === "running") stage.state = failed ? "failed" : "done";
  }
  for (const m of run.members) {
    if (m.status === "running" || m.status === "waiting") m.status = failed ? "failed" : m.status;
  }
  return run;
}
