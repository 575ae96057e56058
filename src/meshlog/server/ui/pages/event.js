// One event: its envelope, payload as formatted JSON, outcome, user intent and decision context, and the way to
// its trace, stream, lineage, parent and children.

import { get } from "../api.js";
import { badge, dl, h, heading, isFailure, json, link, replace, time } from "../dom.js";
import { eventRow } from "./events.js";

const enc = encodeURIComponent;

function eventLink(id) {
  return id ? link(`/events/${enc(id)}`, {}, h("code", {}, id)) : null;
}

export async function render({ main, args, signal }) {
  const [{ event }, children] = await Promise.all([
    get(`v1/events/${enc(args.id)}`, { with_outcome: "true" }, { signal }),
    get("v1/events", { parent_id: args.id, limit: 20 }, { signal }),
  ]);
  const data = event.data || {};
  const intent = data.user_intent ?? data.userIntent;
  const context = data.context;

  const actions = h(
    "nav",
    { class: "actions", "aria-label": "Related views" },
    link(`/lineage/${enc(event.id)}`, {}, "Lineage graph"),
    event.trace_id ? link(`/traces/${enc(event.trace_id)}`, {}, "Trace waterfall") : null,
    link(`/streams/${enc(event.stream)}`, { version: event.stream_position }, "Stream at this version"),
    link("/events", { parent_id: event.id }, "Children"),
  );

  const envelope = dl([
    ["id", h("code", {}, event.id)],
    ["type", h("span", {}, event.type, " ", h("span", { class: "muted" }, `v${event.version}`))],
    ["position", String(event.position)],
    ["stream", h("span", {}, link(`/streams/${enc(event.stream)}`, {}, event.stream), ` #${event.stream_position}`)],
    ["agent", event.agent_id ? link("/events", { agent_id: event.agent_id }, event.agent_id) : null],
    ["trace", event.trace_id ? link(`/traces/${enc(event.trace_id)}`, {}, event.trace_id) : null],
    ["task", event.task_id ? link("/events", { task_id: event.task_id }, event.task_id) : null],
    ["parent", eventLink(event.parent_id)],
    ["root", event.root_id === event.id ? h("span", { class: "muted" }, "this event") : eventLink(event.root_id)],
    ["depth", String(event.depth)],
    ["related", event.related?.length ? h("span", { class: "list" }, event.related.map(eventLink)) : null],
    ["idempotency key", event.idempotency_key ? h("code", {}, event.idempotency_key) : null],
    ["tenant", event.tenant],
    ["occurred", time(event.occurred_at)],
    ["recorded", time(event.recorded_at)],
  ]);

  const childTable = children.events.length
    ? h(
        "div",
        { class: "table-wrap" },
        h("table", { class: "events" }, h("tbody", {}, children.events.map(eventRow))),
        children.has_more ? h("p", {}, link("/events", { parent_id: event.id }, "All children")) : null,
      )
    : h("p", { class: "muted" }, "No child events.");

  replace(
    main,
    heading(event.type, isFailure(event.type) ? badge("error") : null, " ", `event ${event.position} in `, event.stream),
    actions,
    h(
      "div",
      { class: "columns two" },
      h("section", { class: "card", "aria-labelledby": "env-h" }, h("h2", { id: "env-h" }, "Envelope"), envelope),
      h(
        "div",
        { class: "stack" },
        h(
          "section",
          { class: "card", id: "outcome", "aria-labelledby": "out-h" },
          h("h2", { id: "out-h" }, "Outcome"),
          event.outcome ? json(event.outcome, "Outcome") : h("p", { class: "muted" }, "No outcome recorded."),
        ),
        intent ? section("intent", "User intent", intentView(intent)) : null,
        context ? section("context", "Decision context", contextView(context)) : null,
        intent || context
          ? null
          : section("why", "Why", h("p", { class: "muted" }, "No user intent or decision context recorded with this event.")),
      ),
    ),
    section("payload", "Payload", json(data, "Payload JSON")),
    Object.keys(event.metadata || {}).length ? section("metadata", "Metadata", json(event.metadata, "Metadata JSON")) : null,
    section("children", "Children", childTable),
    h("details", { class: "card" }, h("summary", {}, "The whole event as JSON"), json(event, "Event JSON")),
  );
}

function section(id, title, ...content) {
  return h("section", { class: "card", id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...content);
}

function intentView(intent) {
  if (typeof intent !== "object" || intent === null) return h("p", {}, String(intent));
  const labels = {
    problem_solved: "problem solved",
    pain_point: "pain point",
    goal: "goal",
    expected_outcome: "expected outcome",
  };
  return dl(Object.entries(intent).map(([k, v]) => [labels[k] || k, typeof v === "string" ? v : JSON.stringify(v)]));
}

function contextView(context) {
  if (typeof context !== "object" || context === null) return h("p", {}, String(context));
  const pairs = [];
  for (const [k, v] of Object.entries(context)) {
    if (k === "related_events" && Array.isArray(v)) {
      pairs.push(["related events", v.length ? h("span", { class: "list" }, v.map(eventLink)) : "none"]);
    } else if (Array.isArray(v)) {
      pairs.push([k.replaceAll("_", " "), h("ul", {}, v.map((item) => h("li", {}, typeof item === "string" ? item : JSON.stringify(item))))]);
    } else pairs.push([k.replaceAll("_", " "), typeof v === "string" ? v : JSON.stringify(v)]);
  }
  return dl(pairs);
}
