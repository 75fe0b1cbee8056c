// Model text as sanitised markdown, and the answer's citation markers turned into links.
// Model output is untrusted: marked's HTML always goes through DOMPurify before innerHTML.

import { Marked } from "/ui/vendor/marked.esm.js";
import DOMPurify from "/ui/vendor/purify.es.mjs";

const SAFE_HREF = /^(https?:|mailto:)/i;
const UNVERIFIED_TITLE = "no panel member retrieved this source";

// Links open in a new tab without handing over the opener or ranking; any href that is not
// http(s) or mailto (javascript:, data:, relative paths) is dropped.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName !== "A") return;
  const href = (node.getAttribute("href") || "").trim();
  if (!SAFE_HREF.test(href)) {
    node.removeAttribute("href");
    return;
  }
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", "noopener noreferrer nofollow");
});

const PURIFY_CONFIG = {
  // Images would load third-party URLs (and the CSP refuses them anyway); forms, frames and
  // styles have no place in an answer.
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
  // `style` is refused by the CSP; `id`/`class` could collide with the page's own hooks.
  FORBID_ATTR: ["style", "id", "class"],
};

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// HTML a model writes inside its markdown is shown as the text it is, never parsed: nothing
// in it can run or load, and the browser reports no blocked handlers. Images become their alt
// text (the page loads nothing from elsewhere).
const markdown = new Marked({
  async: false,
  gfm: true,
  renderer: {
    html: ({ text }) => escapeHtml(text),
    image: ({ text }) => escapeHtml(text),
  },
});

/** Sanitised HTML for a markdown text. */
export function markdownHtml(text) {
  return DOMPurify.sanitize(markdown.parse(String(text ?? "")), PURIFY_CONFIG);
}

/** Fills `node` with the rendered markdown of `text`. */
export function renderMarkdown(node, text) {
  node.innerHTML = markdownHtml(text);
  return node;
}

/**
 * Links the answer's `[n]` markers to `sources` (`[{n, url, title}]`) and flags what
 * `unverified` lists (cited URLs or `[n]` markers no member retrieved). Walks text nodes only,
 * outside code and existing links, so no markup is ever matched by a pattern.
 */
export function linkCitations(root, sources = [], unverified = []) {
  const byNumber = new Map((sources || []).map((s) => [Number(s.n), s]));
  const flagged = new Set((unverified || []).map(String));

  for (const link of root.querySelectorAll("a[href]")) {
    const href = link.getAttribute("href");
    if (flagged.has(href) || flagged.has(href.replace(/\/$/, "")) || flagged.has(`${href}/`)) {
      markUnverified(link);
    }
  }

  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (text) =>
      text.parentElement?.closest("a, code, pre") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode);
  for (const text of texts) replaceMarkers(text, byNumber, flagged);
}

function markUnverified(node) {
  node.classList.add("unverified");
  node.title = UNVERIFIED_TITLE;
}

const MARKER = /\[(\d{1,4})\]/g;

function replaceMarkers(textNode, byNumber, flagged) {
  const value = textNode.nodeValue;
  if (!value.includes("[")) return;
  const parts = [];
  let last = 0;
  for (const match of value.matchAll(MARKER)) {
    const citation = citationNode(match[0], Number(match[1]), byNumber, flagged);
    if (!citation) continue;
    parts.push(value.slice(last, match.index), citation);
    last = match.index + match[0].length;
  }
  if (!parts.length) return;
  parts.push(value.slice(last));
  textNode.replaceWith(...parts.filter((p) => p !== ""));
}

/** `<a class="citation">` for a known source, `<span class="citation unverified">` for a
 * flagged marker, nothing otherwise (brackets like `[2]` in prose stay as written). */
function citationNode(marker, n, byNumber, flagged) {
  const source = byNumber.get(n);
  if (source && SAFE_HREF.test(String(source.url || ""))) {
    const link = document.createElement("a");
    link.className = "citation";
    link.href = source.url;
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow";
    link.title = source.title ? String(source.title) : String(source.url);
    link.textContent = marker;
    if (flagged.has(marker) || flagged.has(String(source.url))) markUnverified(link);
    return link;
  }
  if (flagged.has(marker)) {
    const span = document.createElement("span");
    span.className = "citation";
    span.textContent = marker;
    markUnverified(span);
    return span;
  }
  return null;
}
