// Recent traces (GET /v1/traces): the runs with events in a window, the last active first, each with its events,
// LLM calls, tokens, failures and agents; a trace opens its waterfall.

import { get } from "../api.js";
import { ago, duration, h, heading, link, num, replace, route, time } from "../dom.js";
import { WINDOWS } from "./overview.js";

const enc = encodeURIComponent;
const PAGE = 50;
const MOST = 500;
/** As many agent ids as a trace's summary names (the server's MAX_TRACE_AGENTS). */
const AGENTS_NAMED = 10;

export async function render({ main, params, signal }) {
  const key = WINDOWS[params.get("window")] ? params.get("window") : "1h";
  const win = WINDOWS[key];
  const agent = (params.get("agent_id") || "").trim();
  const limit = params.get("limit") === String(MOST) ? MOST : PAGE;
  const until = new Date();
  const since = new Date(until.getTime() - win.ms);
  const answer = await get(
    "v1/traces",
    { since: since.toISOString(), until: until.toISOString(), limit, agent_id: agent },
    { signal },
  );
  const traces = answer.traces;
  const range = { since: answer.since, until: answer.until };
  const here = { window: key, agent_id: agent };

  const picker = h(
    "nav",
    { class: "segmented", "aria-label": "Time window" },
    Object.entries(WINDOWS).map(([k, w]) =>
      h("a", { href: route("/traces", { ...here, window: k }), "aria-current": k === key ? "true" : null }, w.label),
    ),
  );
  const refresh = h("a", { class: "button quiet", href: route("/traces", { ...here, t: Date.now() }) }, "Refresh");

  replace(
    main,
    heading(
      "Traces",
      `The runs with events recorded in the last ${win.label}, the last active first: `,
      time(answer.since),
      " – ",
      time(answer.until),
    ),
    h("div", { class: "toolbar" }, picker, refresh),
    h("div", { class: "columns two" }, agentForm(here, agent, traces), openForm()),
    traces.length ? table(traces, range, key) : empty(win, key, agent),
    traces.length ? footer(traces, limit, here, win) : null,
  );
}

function agentForm(here, agent, traces) {
  const input = h("input", {
    id: "trace-agent",
    name: "agent_id",
    value: agent,
    autocomplete: "off",
    list: "trace-agents",
    placeholder: "any agent",
  });
  const seen = [...new Set(traces.flatMap((t) => t.agents))].sort();
  return h(
    "form",
    {
      class: "card row",
      "aria-label": "Filter by agent",
      onsubmit: (e) => {
        e.preventDefault();
        window.location.hash = route("/traces", { ...here, agent_id: input.value.trim() });
      },
    },
    h("label", { for: "trace-agent" }, "Agent"),
    input,
    h("datalist", { id: "trace-agents" }, seen.map((a) => h("option", { value: a }))),
    h("button", { type: "submit" }, "Filter"),
    agent ? h("a", { class: "button quiet", href: route("/traces", { ...here, agent_id: "" }) }, "Any agent") : null,
  );
}

function openForm() {
  const input = h("input", { id: "trace-id", name: "trace", required: true, autocomplete: "off", spellcheck: "false" });
  return h(
    "form",
    {
      class: "card row",
      "aria-label": "Open a trace",
      onsubmit: (e) => {
        e.preventDefault();
        if (input.value.trim()) window.location.hash = route(`/traces/${enc(input.value.trim())}`);
      },
    },
    h("label", { for: "trace-id" }, "Trace id"),
    input,
    h("button", { type: "submit" }, "Open"),
  );
}

function table(traces, range, key) {
  const now = Date.now();
  const rows = traces.map((t) => {
    const span = Date.parse(t.last) - Date.parse(t.started);
    const events = { trace_id: t.trace_id, ...range, order: "asc" };
    return h(
      "tr",
      { class: t.failures ? "failure" : null, dataset: { trace: t.trace_id } },
      h("th", { scope: "row", class: "trace-id" }, link(`/traces/${enc(t.trace_id)}`, {}, t.trace_id)),
      h("td", { class: "opt nowrap" }, h("time", { datetime: t.last, title: t.last }, ago(t.last, now))),
      h("td", { class: "opt nowrap" }, time(t.started)),
      h("td", { class: "opt num nowrap" }, duration(span)),
      h(
        "td",
        { class: "num", "data-count": "events" },
        h("a", { href: route("/events", events), "aria-label": `${t.events} events of ${t.trace_id}` }, num(t.events)),
      ),
      h(
        "td",
        { class: "num", "data-count": "llm_calls" },
        t.llm_calls
          ? h(
              "a",
              { href: route("/events", { ...events, type: "llm.call" }), "aria-label": `${t.llm_calls} LLM calls of ${t.trace_id}` },
              num(t.llm_calls),
            )
          : "0",
      ),
      h("td", { class: "opt num", "data-count": "tokens" }, num(t.tokens)),
      h("td", { class: `num${t.failures ? " bad" : ""}`, "data-count": "failures" }, num(t.failures)),
      h("td", { class: "opt wrap agents" }, agentLinks(t.agents, key)),
    );
  });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "events", id: "traces-table" },
      h("caption", { class: "visually-hidden" }, "Traces, the last active first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "trace"),
          h("th", { scope: "col", class: "opt" }, "last event"),
          h("th", { scope: "col", class: "opt" }, "started"),
          h("th", { scope: "col", class: "opt num" }, "duration"),
          h("th", { scope: "col", class: "num" }, "events"),
          h("th", { scope: "col", class: "num" }, "LLM calls"),
          h("th", { scope: "col", class: "opt num" }, "tokens"),
          h("th", { scope: "col", class: "num" }, "failures"),
          h("th", { scope: "col", class: "opt" }, "agents"),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

function agentLinks(agents, key) {
  if (!agents.length) return h("span", { class: "muted" }, "–");
  const links = agents.map((a) => link("/traces", { window: key, agent_id: a }, a));
  return h(
    "span",
    { class: "list" },
    links,
    agents.length >= AGENTS_NAMED ? h("span", { class: "muted", title: `the first ${AGENTS_NAMED} by name` }, "…") : null,
  );
}

function empty(win, key, agent) {
  const longer = Object.keys(WINDOWS).filter((k) => WINDOWS[k].ms > win.ms);
  return h(
    "p",
    { class: "muted", id: "no-traces" },
    `No trace${agent ? ` of ${agent}` : ""} in the last ${win.label}. `,
    longer.length
      ? link("/traces", { window: longer[longer.length - 1], agent_id: agent }, `Look at the last ${WINDOWS[longer[longer.length - 1]].label}`)
      : null,
  );
}

function footer(traces, limit, here, win) {
  const full = traces.length >= limit;
  return h(
    "p",
    { class: "muted small", id: "traces-note" },
    `${num(traces.length)} trace${traces.length === 1 ? "" : "s"}; counts cover the events recorded in the last ${win.label}. `,
    full && limit < MOST ? link("/traces", { ...here, limit: MOST }, `Show up to ${MOST}`) : null,
    full && limit >= MOST ? "A shorter window or an agent narrows the list." : null,
  );
}
