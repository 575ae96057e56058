// The meshlog HTTP API as the explorer reads it: JSON with the user's token, problems as errors, and the live
// tail read with fetch() (EventSource cannot send an Authorization header).

import { toQuery } from "./dom.js";

const TOKEN_KEY = "meshlog.token";

/** The API token the user gave in this tab (sessionStorage: gone when the tab closes), or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.dispatchEvent(new CustomEvent("meshlog:token"));
}

/** The server asked for a token (401): the page shows the token form. */
export class AuthRequired extends Error {
  constructor(detail) {
    super(detail || "this server needs an API token");
    this.name = "AuthRequired";
  }
}

/** Any other problem answer (RFC 9457): status, code and the problem's fields. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
  }
}

function headers(extra) {
  const result = { Accept: "application/json", ...extra };
  const current = token();
  if (current) result.Authorization = `Bearer ${current}`;
  return result;
}

/** The URL of an API path (relative to the page, so the explorer works under any root path). */
export function url(path, params) {
  const query = toQuery(params);
  return `${path}${query ? `?${query}` : ""}`;
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = null;
  }
  if (response.status === 401) return new AuthRequired(problem?.detail);
  return new ApiError(response.status, problem);
}

/** GET a JSON route: get("v1/events", {type: "llm.call"}). Throws AuthRequired or ApiError. */
export async function get(path, params, { signal } = {}) {
  const response = await fetch(url(path, params), { headers: headers(), signal, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** The path segment of a value (stream names hold ":" and "/"). */
export function seg(value) {
  return encodeURIComponent(value);
}

/**
 * Follow GET /v1/subscribe: call onEvent(event, position) for each Server-Sent Event, resuming after the last
 * one seen (Last-Event-ID) when the connection drops, until signal aborts. onStatus("live"|"retrying"|"closed")
 * reports the connection; an AuthRequired stops it.
 */
export async function subscribe(params, { signal, onEvent, onStatus = () => {}, retryMs = 1000 }) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      const response = await fetch(url("v1/subscribe", params), { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) {
        throw await failure(response);
      }
      onStatus("live");
      for await (const message of messages(response.body, signal)) {
        if (message.id !== null) lastId = message.id;
        if (message.data === "") continue;
        onEvent(JSON.parse(message.data), message.id === null ? null : Number(message.id), message.event);
      }
    } catch (error) {
      if (signal.aborted) break;
      if (error instanceof AuthRequired || (error instanceof ApiError && error.status < 500)) {
        onStatus("closed", error);
        throw error;
      }
    }
    if (signal.aborted) break;
    onStatus("retrying");
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, retryMs);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  onStatus("closed");
}

/** The messages of an SSE body: {id, event, data} per blank-line-terminated block; comments skipped. */
export async function* messages(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", abort);
  let buffer = "";
  let id = null;
  let event = "message";
  let data = [];
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length || id !== null) yield { id, event, data: data.join("\n") };
          id = null;
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "id") id = text;
        else if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
    }
  } finally {
    signal?.removeEventListener("abort", abort);
    try {
      reader.releaseLock();
    } catch {
      // a read still pending after cancel(): the reader is dropped with the body
    }
  }
}
