// Small DOM and formatting helpers. Everything here sets text with textContent and attributes
// with setAttribute: no HTML is ever built from strings.

/**
 * h("p", {class: "x", text: "hi", attrs: {title: "t"}, dataset: {slot: 0}, on: {click: f}},
 *   ...children): children are nodes, strings (as text), or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { class: className, text, attrs, dataset, on, hidden, ...rest } = props || {};
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const [name, value] of Object.entries(dataset || {})) node.dataset[name] = String(value);
  for (const [type, handler] of Object.entries(on || {})) node.addEventListener(type, handler);
  if (hidden) node.hidden = true;
  // Plain DOM properties (id, type, value, htmlFor, ...).
  for (const [name, value] of Object.entries(rest)) {
    if (value !== undefined) node[name] = value;
  }
  append(node, children);
  return node;
}

/** replaceChildren that skips null/false children (replaceChildren would write "null"). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A labelled form field: <div class="field"><label for=id>text</label>control</div>. */
export function field(labelText, control, hint) {
  const label = h("label", { htmlFor: control.id, text: labelText });
  return h("div", { class: "field" }, label, control, hint ? h("small", { class: "hint", text: hint }) : null);
}

export function option(value, text, selected = false) {
  const node = h("option", { value, text });
  if (selected) node.selected = true;
  return node;
}

// ---- the page's error line (#error, role="alert") -------------------------------------

export function showError(message) {
  const box = document.getElementById("error");
  if (box) box.textContent = String(message || "Something went wrong.");
}

export function clearError() {
  const box = document.getElementById("error");
  if (box) box.textContent = "";
}

// ---- formatting ---------------------------------------------------------------------------

/** "$0.000123" (6 decimals), "$0" for zero, "—" when unknown. */
export function formatCost(cost) {
  if (cost === null || cost === undefined || cost === "") return "—";
  const value = Number(cost);
  if (!Number.isFinite(value)) return "—";
  if (value === 0) return "$0";
  return `$${value.toFixed(6)}`;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return "—";
  const value = Number(ms);
  if (value < 10) return `${Math.round(value * 10) / 10} ms`; // gateway overheads are sub-ms
  if (value < 1000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(value < 10_000 ? 2 : 1)} s`;
}

const numberFormat = new Intl.NumberFormat();

export function formatCount(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
  return numberFormat.format(Number(n));
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function formatTime(ms) {
  if (!Number.isFinite(Number(ms))) return "—";
  return timeFormat.format(new Date(Number(ms)));
}

/** Which element to replace only when its data changed (keeps focus and <details> state). */
const renderedKeys = new WeakMap();

export function changed(node, key) {
  if (renderedKeys.get(node) === key) return false;
  renderedKeys.set(node, key);
  return true;
}
