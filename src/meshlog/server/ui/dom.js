// Building the page: elements made with textContent only (never HTML from data), links, and formatting.

const SVG_NS = "http://www.w3.org/2000/svg";

/** Apply attributes and properties to an element (a helper of h() and svg()). */
function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/"}, "text", otherNode). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  return append(apply(document.createElement(tag), attrs), children);
}

/** An SVG element, like h(). */
export function svg(tag, attrs, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** A link to a route of the explorer: link("#/events", {type: "x"}, "text"). */
export function link(path, params, ...children) {
  return h("a", { href: route(path, params) }, ...children);
}

/** The hash of a route with its query parameters (arrays repeat the parameter; empty values are left out). */
export function route(path, params) {
  const query = toQuery(params);
  return `#${path}${query ? `?${query}` : ""}`;
}

/** URL query text from an object; arrays repeat the key, null/undefined/"" are left out. */
export function toQuery(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item === null || item === undefined || item === "") continue;
      search.append(key, String(item));
    }
  }
  return search.toString();
}

/** Replace the children of an element. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const NUMBER = new Intl.NumberFormat("en");

/** 12345 -> "12,345". */
export function num(value) {
  return value === null || value === undefined ? "–" : NUMBER.format(value);
}

/** Milliseconds as text: 850 ms, 5.65 s, 2 min 20 s. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(ms < 10_000 ? 2 : 1))} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return seconds ? `${minutes} min ${seconds} s` : `${minutes} min`;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** A <time> element showing local date and time (to the millisecond), the ISO text in its datetime. */
export function time(iso, { date = true } = {}) {
  if (!iso) return h("span", { class: "muted" }, "–");
  const d = new Date(iso);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return h("time", { datetime: iso, title: iso }, date ? `${day} ${clock}` : clock);
}

/** How long ago: "just now", "42 s ago", "3 min ago", "2 h ago", "5 d ago". */
export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86_400)} d ago`;
}

/** An ISO timestamp (with offset) as the value of an <input type="datetime-local"> (local time), and back. */
export function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** A short one-line summary of an event's data. */
export function summary(data, max = 140) {
  if (!data || typeof data !== "object") return "";
  const parts = [];
  for (const [key, value] of Object.entries(data)) {
    if (key === "user_intent" || key === "context") continue;
    let text = typeof value === "string" ? value : JSON.stringify(value);
    if (text.length > 60) text = `${text.slice(0, 57)}…`;
    parts.push(`${key}: ${text}`);
    if (parts.join(", ").length > max) break;
  }
  const line = parts.join(", ");
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Formatted JSON in a <pre> (text only). */
export function json(value, label) {
  return h("pre", { class: "json", tabindex: "0", "aria-label": label || "JSON" }, JSON.stringify(value, null, 2));
}

/** A definition list from [term, value] pairs; values may be nodes or text; null values are left out. */
export function dl(pairs, cls = "fields") {
  const list = h("dl", { class: cls });
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    list.append(h("div", {}, h("dt", {}, term), h("dd", {}, value === null ? h("span", { class: "muted" }, "–") : value)));
  }
  return list;
}

/** A status badge (ok, error, open, active, stale, closed...). */
export function badge(status) {
  return h("span", { class: `badge badge-${String(status).replace(/[^a-z0-9_-]/gi, "")}` }, status);
}

/** Whether an event type names a failure (as the server's stats count them). */
export function isFailure(type) {
  const kind = (type || "").toLowerCase().replace(/[.\-/:]/g, "_");
  return kind === "error" || kind === "error_occurred" || /_(error|failure|failed)$/.test(kind);
}

/** A page heading with an optional subtitle; sets the document title too. */
export function heading(title, ...sub) {
  document.title = `${title} · meshlog`;
  return h("div", { class: "page-head" }, h("h1", {}, title), sub.length ? h("p", { class: "sub" }, ...sub) : null);
}
