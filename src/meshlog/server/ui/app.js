// The explorer's router: a hash route (#/events?type=llm.call) picks a page, which renders into <main>.

import { AuthRequired, ApiError, setToken, token } from "./api.js";
import { h, heading, replace } from "./dom.js";
import * as eventPage from "./pages/event.js";
import * as events from "./pages/events.js";
import * as instances from "./pages/instances.js";
import * as lineage from "./pages/lineage.js";
import * as overview from "./pages/overview.js";
import * as stream from "./pages/stream.js";
import * as streams from "./pages/streams.js";
import * as trace from "./pages/trace.js";
import * as traces from "./pages/traces.js";

/** [pattern, page, nav section]: a pattern's ":name" segments become the page's path arguments (decoded). */
const ROUTES = [
  ["/", overview, "overview"],
  ["/events", events, "events"],
  ["/events/:id", eventPage, "events"],
  ["/lineage/:id", lineage, "events"],
  ["/traces", traces, "traces"],
  ["/traces/:id", trace, "traces"],
  ["/streams", streams, "streams"],
  ["/streams/:name", stream, "streams"],
  ["/instances", instances, "instances"],
];

const main = document.getElementById("main");
const status = document.getElementById("status");
let current = null; // {controller, path}

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, page, section] of ROUTES) {
    const want = pattern.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const args = {};
    let ok = true;
    for (let i = 0; i < want.length; i++) {
      if (want[i].startsWith(":")) {
        try {
          args[want[i].slice(1)] = decodeURIComponent(parts[i]);
        } catch {
          ok = false;
        }
      } else if (want[i] !== parts[i]) ok = false;
    }
    if (ok) return { page, section, args };
  }
  return null;
}

/** The current route: its path and query parameters. */
export function location() {
  const hash = window.location.hash.startsWith("#/") ? window.location.hash.slice(1) : "/";
  const q = hash.indexOf("?");
  return { path: q < 0 ? hash : hash.slice(0, q), params: new URLSearchParams(q < 0 ? "" : hash.slice(q + 1)) };
}

/** Tell screen readers what happened (a polite live region). */
export function announce(text) {
  status.textContent = "";
  window.setTimeout(() => {
    status.textContent = text;
  }, 50);
}

function markNav(section) {
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function renderAuth() {
  const box = document.getElementById("auth");
  if (token()) {
    replace(
      box,
      h("button", { type: "button", class: "quiet", id: "sign-out", onclick: () => signOut() }, "Sign out"),
    );
  } else replace(box);
}

function signOut() {
  setToken(null);
  announce("Signed out");
  render(true);
}

function tokenForm(error) {
  document.title = "Sign in · meshlog";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "mlk_…",
  });
  const form = h(
    "form",
    {
      class: "card token-form",
      onsubmit: (e) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        setToken(value);
        render(true);
      },
    },
    h("h1", {}, "API token needed"),
    h(
      "p",
      {},
      "This server serves its data only with an API token. The token is kept in this browser tab only " +
        "(session storage) and sent with every request; Sign out forgets it.",
    ),
    error ? h("p", { class: "error", role: "alert" }, error) : null,
    h("label", { for: "token" }, "Token"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Sign in")),
    h("p", { class: "muted small" }, "Create one with: meshlog token create --tenant <tenant> --scope read"),
  );
  replace(main, form);
  input.focus();
}

function showError(error) {
  if (error instanceof AuthRequired) {
    const had = token();
    if (had) setToken(null);
    tokenForm(had ? "That token was refused (unknown, revoked or expired). Try another." : null);
    return;
  }
  const detail = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error?.message || error);
  replace(
    main,
    heading(error instanceof ApiError && error.status === 404 ? "Not found" : "Something went wrong"),
    h("p", { class: "error", role: "alert" }, detail),
    h("p", {}, h("a", { href: "#/" }, "Back to the overview")),
  );
}

/** Render the current route (aborting the previous page's requests and live tails). */
export async function render(focus = false) {
  const { path, params } = location();
  current?.controller.abort();
  const controller = new AbortController();
  const moved = current === null || current.path !== path;
  current = { controller, path };
  renderAuth();
  const found = match(path);
  if (!found) {
    markNav(null);
    showError(new ApiError(404, { detail: `no page ${path}` }));
    return;
  }
  markNav(found.section);
  main.setAttribute("aria-busy", "true");
  try {
    await found.page.render({ main, params, args: found.args, signal: controller.signal, announce, path, fail: (e) => {
      if (!controller.signal.aborted) showError(e);
    } });
    if (focus && moved && !controller.signal.aborted) {
      window.scrollTo(0, 0);
      main.focus({ preventScroll: true });
    }
  } catch (error) {
    if (controller.signal.aborted || error?.name === "AbortError") return;
    showError(error);
  } finally {
    if (current?.controller === controller) main.removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", () => {
  if (!window.location.hash || window.location.hash.startsWith("#/")) render(true);
});
document.addEventListener("meshlog:token", renderAuth);
// "Skip to content" moves the focus without touching the route in the address
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
render(false);
