// Playground (/): a question to a fusion panel (custom or preset) or to one model, streamed
// into the shared run view. The run and the form outlive the page: leaving for History and
// coming back finds them as they were (a run in flight keeps streaming meanwhile).

import { getJSON, streamChat, isAbort } from "/ui/api.js";
import { h, field, option, showError, clearError } from "/ui/dom.js";
import { newRun, applyChunk, applyReport, finishRun } from "/ui/state.js";
import { renderRun } from "/ui/render.js";

const FUSION_PREFIX = "quorate/fusion";
const STRATEGIES = ["fuse", "vote", "select", "mixture", "auto"];
const START_MEMBERS = 3;

const session = {
  models: null, // {fusion: [...], plain: [...]} once /v1/models answered
  values: null, // the form as last edited
  run: null,
  controller: null,
};
let view = null; // the mounted page's elements; null while another page shows

export const title = "Playground";

export function mount(root) {
  view = buildForm(root);
  if (session.run) scheduleRender();
  if (session.models) fillModelControls();
  else loadModels();
  return {
    unmount() {
      view = null;
    },
  };
}

// ---- the form -------------------------------------------------------------------------------

function select(id, extra = {}) {
  return h("select", { id, ...extra });
}

function buildForm(root) {
  const question = h("textarea", { id: "question", rows: 5, required: true, placeholder: "Ask the panel something…" });
  const mode = select("mode");
  mode.append(option("fusion", "Fusion (panel + judge + synthesis)"), option("single", "Single model"));
  const preset = select("preset");
  const panel = h("div", { id: "panel", class: "panel-editor" });
  const addMember = h("button", { type: "button", id: "add-member", class: "button secondary small", text: "Add member" });
  const judge = select("judge");
  const synthesizer = select("synthesizer");
  const strategy = select("strategy");
  strategy.append(option("", "preset default"), ...STRATEGIES.map((s) => option(s, s)));
  const model = select("model");
  const run = h("button", { type: "submit", id: "run", class: "button primary", text: "Run" });

  const custom = h(
    "div",
    { id: "custom-options", class: "custom-options" },
    h("fieldset", { class: "panel-fieldset" }, h("legend", { text: "Panel members" }), panel, addMember),
    h("div", { class: "row" }, field("Judge", judge), field("Synthesizer", synthesizer))
  );
  const fusionOptions = h(
    "div",
    { id: "fusion-options", class: "fusion-options" },
    h("div", { class: "row" }, field("Preset", preset), field("Strategy", strategy)),
    custom
  );
  const singleOptions = h("div", { id: "single-options", class: "row", hidden: true }, field("Model", model));
  const form = h(
    "form",
    { id: "playground-form", class: "card form", attrs: { "aria-label": "Run a question", novalidate: true } },
    field("Question", question, "Ctrl+Enter (⌘+Enter) runs it."),
    h("div", { class: "row" }, field("Mode", mode)),
    fusionOptions,
    singleOptions,
    h("div", { class: "actions" }, run, h("span", { id: "run-hint", class: "muted" }))
  );
  const result = h("div", { id: "result", class: "result", attrs: { "aria-label": "Result" } });
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", { text: "Playground" }), h("p", { class: "muted", text: "Ask a panel of models; a judge compares their answers and a synthesizer writes the final one." })),
    form,
    result
  );

  const els = { root, form, question, mode, preset, panel, addMember, judge, synthesizer, strategy, model, run, custom, fusionOptions, singleOptions, result };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (session.controller) session.controller.abort();
    else start();
  });
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!session.controller) form.requestSubmit();
    }
  });
  form.addEventListener("change", () => {
    saveValues();
    syncVisibility();
  });
  form.addEventListener("input", saveValues);
  addMember.addEventListener("click", () => {
    addMemberRow(els, lastMemberValue(els));
    saveValues();
    panel.querySelector(".member-row:last-child select")?.focus();
  });
  question.value = session.values?.question ?? "";
  mode.value = session.values?.mode ?? "fusion";
  strategy.value = session.values?.strategy ?? "";
  syncRunButton();
  syncVisibility();
  return els;
}

function lastMemberValue(els) {
  const selects = els.panel.querySelectorAll(".member-model");
  return selects.length ? selects[selects.length - 1].value : null;
}

function addMemberRow(els, value) {
  const row = h("div", { class: "member-row" });
  const choose = h("select", { class: "member-model" });
  fillModelOptions(choose, session.models?.plain || [], value);
  const remove = h("button", { type: "button", class: "button secondary small remove-member", text: "Remove" });
  remove.addEventListener("click", () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    renumberMembers(els);
    saveValues();
    next?.querySelector("select")?.focus();
  });
  row.append(h("label", { class: "member-label" }), choose, remove);
  els.panel.append(row);
  renumberMembers(els);
}

/** Labels and ids follow the order; the last member cannot be removed. */
function renumberMembers(els) {
  const rows = [...els.panel.querySelectorAll(".member-row")];
  rows.forEach((row, i) => {
    const choose = row.querySelector("select");
    choose.id = `member-${i}`;
    const label = row.querySelector("label");
    label.htmlFor = choose.id;
    label.replaceChildren(h("span", { class: "visually-hidden", text: "Member " }), `#${i + 1}`);
    const remove = row.querySelector(".remove-member");
    remove.setAttribute("aria-label", `Remove member #${i + 1}`);
    remove.disabled = rows.length === 1;
  });
}

function fillModelOptions(choose, models, value) {
  choose.replaceChildren(...models.map((m) => option(m.id, m.id)));
  if (value && models.some((m) => m.id === value)) choose.value = value;
}

function fillDefaultable(choose, models, value) {
  choose.replaceChildren(option("", "preset default"), ...models.map((m) => option(m.id, m.id)));
  choose.value = models.some((m) => m.id === value) ? value : "";
}

function syncVisibility() {
  if (!view) return;
  const single = view.mode.value === "single";
  const preset = Boolean(view.preset.value);
  view.fusionOptions.hidden = single;
  view.singleOptions.hidden = !single;
  view.custom.hidden = preset;
  for (const control of view.custom.querySelectorAll("select, button")) control.disabled = preset || single;
  if (!preset && !single) renumberMembers(view); // re-applies the last member's disabled Remove
}

function syncRunButton() {
  if (!view) return;
  const running = Boolean(session.controller);
  view.run.textContent = running ? "Stop" : "Run";
  view.run.classList.toggle("danger", running);
  view.run.classList.toggle("primary", !running);
  view.form.setAttribute("aria-busy", String(running));
}

function currentValues() {
  return {
    question: view.question.value,
    mode: view.mode.value,
    preset: view.preset.value,
    members: [...view.panel.querySelectorAll(".member-model")].map((s) => s.value),
    judge: view.judge.value,
    synthesizer: view.synthesizer.value,
    strategy: view.strategy.value,
    model: view.model.value,
  };
}

function saveValues() {
  if (view && session.models) session.values = currentValues();
  else if (view) session.values = { ...(session.values || {}), question: view.question.value, mode: view.mode.value, strategy: view.strategy.value };
}

// ---- models ---------------------------------------------------------------------------------

async function loadModels() {
  try {
    const list = await getJSON("/v1/models");
    const data = Array.isArray(list?.data) ? list.data : [];
    session.models = {
      fusion: data.filter((m) => String(m.id).startsWith(FUSION_PREFIX)),
      plain: data.filter((m) => !String(m.id).startsWith(FUSION_PREFIX)),
    };
    fillModelControls();
  } catch (error) {
    showError(error.message);
  }
}

function fillModelControls() {
  if (!view || !session.models) return;
  const { fusion, plain } = session.models;
  const saved = session.values || {};
  view.preset.replaceChildren(option("", "Custom panel"), ...fusion.map((m) => option(m.id, m.name || m.id)));
  view.preset.value = fusion.some((m) => m.id === saved.preset) ? saved.preset : "";
  fillDefaultable(view.judge, plain, saved.judge);
  fillDefaultable(view.synthesizer, plain, saved.synthesizer);
  fillModelOptions(view.model, plain, saved.model);
  view.panel.replaceChildren();
  const members = saved.members?.length ? saved.members : plain.slice(0, START_MEMBERS).map((m) => m.id);
  while (members.length < START_MEMBERS && plain.length) members.push(plain[members.length % plain.length].id);
  for (const value of members) addMemberRow(view, value);
  saveValues();
  syncVisibility();
}

// ---- a run ------------------------------------------------------------------------------------

// The usage chunk is asked for: the totals line reads the exact usage and cost from it.
const STREAM = { stream: true, stream_options: { include_usage: true } };

function buildRequest(values) {
  const messages = [{ role: "user", content: values.question }];
  if (values.mode === "single") {
    return { model: values.model, ...STREAM, messages };
  }
  const plugin = { id: "fusion", stream_progress: true };
  if (values.preset) {
    if (values.strategy) plugin.strategy = values.strategy;
    return { model: values.preset, ...STREAM, messages, plugins: [plugin] };
  }
  plugin.analysis_models = values.members;
  if (values.judge) plugin.judge = values.judge;
  if (values.synthesizer) plugin.model = values.synthesizer;
  if (values.strategy) plugin.strategy = values.strategy;
  return { model: FUSION_PREFIX, ...STREAM, messages, plugins: [plugin] };
}

/** Why the form cannot run yet, or null. */
function invalid(values) {
  if (!values.question.trim()) return "Write a question first.";
  if (values.mode === "single" && !values.model) return "Choose a model.";
  if (values.mode === "fusion" && !values.preset && !values.members.length) return "Add at least one panel member.";
  return null;
}

async function start() {
  clearError();
  if (!session.models) await loadModels(); // it failed before (e.g. the key dialog was dismissed)
  if (!session.models || !view) return;
  const values = currentValues();
  const problem = invalid(values);
  if (problem) {
    showError(problem);
    view.question.focus();
    return;
  }
  const custom = values.mode === "fusion" && !values.preset;
  const run = newRun({
    mode: values.mode,
    model: values.mode === "single" ? values.model : values.preset || FUSION_PREFIX,
    members: custom ? values.members : [],
  });
  const controller = new AbortController();
  Object.assign(session, { run, controller });
  syncRunButton();
  scheduleRender();
  revealResult();
  try {
    await streamChat(buildRequest(values), {
      signal: controller.signal,
      onChunk: (chunk) => {
        applyChunk(run, chunk);
        scheduleRender();
      },
    });
    finishRun(run, "done");
  } catch (error) {
    if (isAbort(error)) {
      finishRun(run, "stopped");
    } else {
      if (error.metadata?.fusion) applyReport(run, error.metadata.fusion);
      finishRun(run, "failed", error.message);
      if (session.run === run) showError(error.message);
    }
  } finally {
    if (session.controller === controller) session.controller = null;
    syncRunButton();
    scheduleRender();
  }
}

/** On a small screen the result starts below the fold: bring its top into view. */
function revealResult() {
  const top = view?.result.getBoundingClientRect().top;
  if (top !== undefined && top > window.innerHeight * 0.8) {
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    view.result.scrollIntoView({ block: "start", behavior: smooth ? "smooth" : "auto" });
  }
}

// Stream chunks arrive far faster than the screen redraws: draw at most once a frame.
let frameQueued = false;

function scheduleRender() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => {
    frameQueued = false;
    if (view && session.run) renderRun(view.result, session.run);
  });
}
