// Entry point: a small client-side router over the paths the server answers with this same
// HTML (/, /runs, /runs/{id}, /usage). Same-origin links to those paths are handled here with
// history.pushState instead of a page load.

import * as playground from "/ui/playground.js";
import * as history from "/ui/history.js";
import * as runPage from "/ui/run.js";
import * as usage from "/ui/usage.js";
import { h, clearError } from "/ui/dom.js";

const ROUTES = [
  { pattern: /^\/$/, page: playground, nav: "/" },
  { pattern: /^\/runs$/, page: history, nav: "/runs" },
  { pattern: /^\/runs\/([^/]+)$/, page: runPage, nav: "/runs", params: (m) => ({ id: decodeURIComponent(m[1]) }) },
  { pattern: /^\/usage$/, page: usage, nav: "/usage" },
];

const notFound = {
  title: "Not found",
  mount(root) {
    root.replaceChildren(
      h("div", { class: "page-head" }, h("h1", { text: "Not found" }), h("p", { class: "muted", text: "There is no page here." })),
      h("p", {}, h("a", { href: "/", text: "Go to the Playground" }))
    );
  },
};

let current = null; // {unmount?} of the page on screen

function match(pathname) {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  for (const route of ROUTES) {
    const found = route.pattern.exec(path);
    if (found) return { route, params: route.params ? route.params(found) : {} };
  }
  return null;
}

function markNav(navPath) {
  for (const link of document.querySelectorAll(".site-nav a")) {
    if (link.getAttribute("href") === navPath) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Mounts the page for the current location. `focus`: move focus to the new page (client-side
 * navigation only, so screen readers and keyboards land on the new content). */
function render({ focus = false } = {}) {
  current?.unmount?.();
  clearError();
  const found = match(location.pathname);
  const page = found ? found.route.page : notFound;
  markNav(found ? found.route.nav : null);
  const root = document.getElementById("page");
  current = page.mount(root, found ? found.params : {}) || {};
  document.title = `${page.title} · Quorate`;
  if (focus) {
    const heading = root.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  }
}

export function navigate(url) {
  window.history.pushState({}, "", url);
  render({ focus: true });
}

/** A plain left click on a same-origin link to one of our pages. */
function routable(event) {
  if (event.defaultPrevented || event.button !== 0) return null;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return null;
  const link = event.target.closest?.("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return null;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !match(url.pathname)) return null;
  return url;
}

function start() {
  document.addEventListener("click", (event) => {
    const url = routable(event);
    if (!url) return;
    event.preventDefault();
    if (url.pathname + url.search === location.pathname + location.search) return;
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => render({ focus: true }));
  // Saving a key is handled by api.js (the calls that got a 401 retry on their own).
  document.getElementById("key-cancel")?.addEventListener("click", () => document.getElementById("key-dialog")?.close());
  render();
}

start();
