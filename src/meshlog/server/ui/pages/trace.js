// A trace as a waterfall: its spans (LLM calls, tool calls, spans) as bars on a time axis, its other events as
// markers, errors in red; a row opens the details (model, tokens, finish reason, error, prompt and response).

import { get } from "../api.js";
import { badge, dl, duration, h, heading, link, num, replace, time } from "../dom.js";

const enc = encodeURIComponent;

export async function render({ main, args, params, signal }) {
  const trace = await get(`v1/traces/${enc(args.id)}/spans`, {}, { signal });
  const spans = trace.spans;
  const total = Math.max(1, Date.parse(trace.end) - Date.parse(trace.start));
  const onlyTimed = params.get("markers") === "0";
  const shown = onlyTimed ? spans.filter((s) => s.kind !== "event") : spans;
  const llm = spans.filter((s) => s.kind === "llm");
  const tokens = llm.reduce((sum, s) => sum + (s.total_tokens || 0), 0);
  const errors = spans.filter((s) => s.status === "error");

  const summary = dl(
    [
      ["duration", duration(total)],
      ["events", num(trace.event_count)],
      ["LLM calls", num(llm.length)],
      ["tokens", num(tokens)],
      ["errors", errors.length ? h("span", { class: "bad" }, num(errors.length)) : "0"],
      ["started", time(trace.start)],
    ],
    "fields inline",
  );

  const list = h("ol", { class: "waterfall", id: "waterfall", "aria-label": "Spans by start time" });
  list.append(axisRow(total));
  for (const span of shown) list.append(spanRow(span, total));

  replace(
    main,
    heading(`Trace ${trace.trace_id}`, "Spans and LLM calls on the trace's time axis; select a row for its details."),
    h(
      "nav",
      { class: "actions", "aria-label": "Related views" },
      link("/traces", {}, "Recent traces"),
      link("/events", { trace_id: trace.trace_id, order: "asc" }, "Events of this trace"),
      h("a", { href: `v1/traces/${enc(trace.trace_id)}/narrative` }, "Narrative (Markdown)"),
      onlyTimed
        ? link(`/traces/${enc(trace.trace_id)}`, {}, "Show every event")
        : link(`/traces/${enc(trace.trace_id)}`, { markers: "0" }, "Only spans and calls"),
    ),
    h("section", { class: "card" }, summary),
    trace.truncated ? h("p", { class: "warn" }, `Only the first ${num(trace.event_count)} events are shown.`) : null,
    h(
      "div",
      { class: "legend muted small", "aria-hidden": "true" },
      h("span", { class: "key kind-llm" }, "LLM call"),
      h("span", { class: "key kind-tool" }, "tool call"),
      h("span", { class: "key kind-span" }, "span"),
      h("span", { class: "key kind-event" }, "event"),
      h("span", { class: "key status-error" }, "error"),
    ),
    h("div", { class: "card waterfall-card" }, list),
  );
}

function pct(ms, total) {
  return `${Math.min(100, Math.max(0, (ms / total) * 100))}%`;
}

function axisRow(total) {
  const track = h("div", { class: "track axis" });
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const tick = h("span", { class: `tick${f === 1 ? " last" : ""}${f === 0.25 || f === 0.75 ? " minor" : ""}` }, duration(total * f));
    tick.style.left = `${f * 100}%`;
    track.append(tick);
  }
  return h("li", { class: "row axis-row", "aria-hidden": "true" }, h("div", { class: "label" }), track);
}

function spanRow(span, total) {
  const isMarker = span.kind === "event";
  const bar = h("span", { class: isMarker ? "marker" : "bar" });
  bar.style.left = pct(span.offset_ms, total);
  if (!isMarker) {
    const width = span.duration_ms === null ? total - span.offset_ms : span.duration_ms;
    bar.style.width = `max(3px, ${pct(width, total)})`;
  }
  const tokens = span.total_tokens ? ` · ${num(span.total_tokens)} tokens` : "";
  const meta = isMarker ? span.agent_id || "" : `${duration(span.duration_ms)}${tokens}`;
  const detailsId = `d-${span.id}`;
  const details = h("div", { class: "span-details", id: detailsId, hidden: true }, detailView(span));
  const label = h(
    "button",
    { type: "button", class: "label", "aria-expanded": "false", "aria-controls": detailsId },
    h("span", { class: "kind" }, span.kind === "event" ? "•" : span.kind),
    h("span", { class: "name" }, span.name),
    h("span", { class: "meta" }, meta),
  );
  label.style.paddingLeft = `${0.5 + Math.min(span.depth, 8) * 0.75}rem`;
  label.addEventListener("click", () => {
    const open = label.getAttribute("aria-expanded") !== "true";
    label.setAttribute("aria-expanded", String(open));
    details.hidden = !open;
  });
  const statusText = span.status === "ok" ? "" : ` (${span.status})`;
  return h(
    "li",
    {
      class: `row kind-${span.kind} status-${span.status}`,
      dataset: { kind: span.kind, id: span.id, offset: span.offset_ms, status: span.status },
      "aria-label": `${span.kind} ${span.name}${statusText}, at ${duration(span.offset_ms)}`,
    },
    label,
    h("div", { class: "track" }, bar),
    details,
  );
}

function detailView(span) {
  const pairs = [
    ["status", badge(span.status)],
    ["type", span.type],
    ["agent", span.agent_id ? link("/events", { agent_id: span.agent_id }, span.agent_id) : null],
    ["task", span.task_id ? link("/events", { task_id: span.task_id }, span.task_id) : null],
    ["start", time(span.start)],
    ["offset", duration(span.offset_ms)],
  ];
  if (span.kind !== "event") pairs.push(["duration", duration(span.duration_ms)]);
  if (span.kind === "llm") {
    pairs.push(
      ["model", span.model],
      ["tokens", span.total_tokens === null ? null : `${num(span.input_tokens)} in + ${num(span.output_tokens)} out = ${num(span.total_tokens)}`],
      ["finish reason", span.finish_reason],
    );
  }
  if (span.error) pairs.push(["error", h("span", { class: "bad" }, span.error_type ? `${span.error_type}: ${span.error}` : span.error)]);
  pairs.push([
    span.end_id ? "events" : "event",
    h(
      "span",
      { class: "list" },
      link(`/events/${enc(span.id)}`, {}, span.end_id ? "start" : "open"),
      span.end_id ? link(`/events/${enc(span.end_id)}`, {}, "end") : null,
      link(`/lineage/${enc(span.id)}`, {}, "lineage"),
    ),
  ]);
  return h(
    "div",
    {},
    dl(pairs),
    span.prompt !== null && span.prompt !== undefined ? text("Prompt", span.prompt) : null,
    span.response !== null && span.response !== undefined ? text("Response", span.response) : null,
    span.kind === "llm" && span.prompt == null && span.response == null
      ? h("p", { class: "muted small" }, "Prompt and response were not recorded (record them with log_full_payload=True).")
      : null,
  );
}

function text(title, value) {
  return h(
    "div",
    { class: "payload-text" },
    h("h3", {}, title),
    h("pre", { tabindex: "0" }, typeof value === "string" ? value : JSON.stringify(value, null, 2)),
  );
}
