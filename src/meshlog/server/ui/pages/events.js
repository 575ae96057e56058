// Events: a filtered, paginated table (server-side filters, cursor pages with a stack for "previous") and a
// live tail that adds new matching events at the top as they are committed.

import { get, subscribe } from "../api.js";
import { fromLocalInput, h, heading, isFailure, link, num, replace, route, summary, time, toLocalInput } from "../dom.js";

const PAGE = 50;
const MAX_PAGE = 1000;
const FILTERS = ["type", "agent_id", "stream", "trace_id", "task_id", "parent_id", "since", "until", "text"];

const MAX_LIVE_ROWS = 500;

/** The pages seen for the current filters: kept across visits to an event and back. */
let paging = { key: null, stack: [], cursor: null, total: null };
let knownTypes = null;

function filtersOf(params) {
  const filters = {};
  for (const name of FILTERS) {
    const values = params.getAll(name).filter((v) => v !== "");
    if (values.length) filters[name] = name === "type" ? values : values[0];
  }
  filters.order = params.get("order") === "asc" ? "asc" : "desc";
  const limit = Number.parseInt(params.get("limit") || "", 10);
  filters.limit = limit >= 1 && limit <= MAX_PAGE ? limit : PAGE;
  return filters;
}

export async function render({ main, params, signal, announce, fail }) {
  const filters = filtersOf(params);
  const key = JSON.stringify(filters);
  if (paging.key !== key) paging = { key, stack: [], cursor: null, total: null };
  paging.total = null; // counted again on every visit
  const live = params.get("live") === "1";

  const form = filterForm(filters, live);
  const table = h("table", { class: "events", id: "events-table" });
  const info = h("p", { class: "muted", id: "page-info", "aria-live": "polite" });
  const prev = h("button", { type: "button", id: "prev", class: "quiet" }, "← Previous");
  const next = h("button", { type: "button", id: "next", class: "quiet" }, "Next →");
  const first = h("button", { type: "button", id: "first", class: "quiet" }, "First page");
  const liveState = h("span", { class: "live-state muted", id: "live-state" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" }, first, prev, next);

  replace(
    main,
    heading("Events", "Every event the store holds, filtered on the server; newest first unless you choose otherwise."),
    form,
    h("div", { class: "toolbar" }, info, liveState),
    h("div", { class: "table-wrap" }, table),
    pager,
  );

  async function load() {
    const query = { ...filters, cursor: paging.cursor };
    if (paging.total === null) query.total_count = "true";
    const page = await get("v1/events", query, { signal });
    if (page.total_count !== null && page.total_count !== undefined) paging.total = page.total_count;
    paging.next = page.has_more ? page.next_cursor : null;
    fill(table, page.events);
    const start = paging.stack.length * filters.limit + 1;
    const end = paging.stack.length * filters.limit + page.events.length;
    info.textContent = page.events.length
      ? `Events ${num(start)}–${num(end)}${paging.total !== null ? ` of ${num(paging.total)}` : ""} · page ${paging.stack.length + 1}`
      : "No event matches these filters.";
    prev.disabled = paging.stack.length === 0;
    first.disabled = paging.stack.length === 0;
    next.disabled = !paging.next;
  }

  next.addEventListener("click", async () => {
    if (!paging.next) return;
    paging.stack.push(paging.cursor);
    paging.cursor = paging.next;
    await load().catch(fail);
    announce(info.textContent);
  });
  prev.addEventListener("click", async () => {
    if (!paging.stack.length) return;
    paging.cursor = paging.stack.pop();
    await load().catch(fail);
    announce(info.textContent);
  });
  first.addEventListener("click", async () => {
    paging.stack = [];
    paging.cursor = null;
    await load().catch(fail);
    announce(info.textContent);
  });

  // The head is read before the first page, so that the tail misses nothing committed in between (an event
  // both on the page and in the tail is shown once).
  const head = live ? (await get("v1/head", {}, { signal })).position : null;
  await load();
  loadTypes(form, signal);
  if (live) tail(head, filters, table, liveState, signal, announce, fail);
}

/** Follow new events from the head on, newest on top. */
async function tail(head, filters, table, state, signal, announce, fail) {
  const params = { after_position: head };
  for (const name of FILTERS) if (filters[name]) params[name] = filters[name];
  let added = 0;
  try {
    await subscribe(params, {
      signal,
      onStatus: (s) => {
        state.textContent = s === "live" ? "● live" : s === "retrying" ? "reconnecting…" : "";
        state.className = `live-state ${s === "live" ? "on" : "muted"}`;
      },
      onEvent: (event) => {
        const body = table.tBodies[0] || table.appendChild(h("tbody"));
        if (body.querySelector(`tr[data-position="${Number(event.position)}"]`)) return;
        const row = eventRow(event);
        row.classList.add("fresh");
        if (filters.order === "asc") body.append(row);
        else body.prepend(row);
        while (body.rows.length > MAX_LIVE_ROWS) body.deleteRow(filters.order === "asc" ? 0 : -1);
        added += 1;
        announce(`${added} new event${added === 1 ? "" : "s"}: ${event.type}`);
      },
    });
  } catch (error) {
    fail(error);
  }
}

function headerRow() {
  return h(
    "thead",
    {},
    h(
      "tr",
      {},
      ["#", "recorded", "type", "agent", "stream", "trace", "task", "data"].map((label, i) =>
        h("th", { scope: "col", class: i >= 5 ? "opt" : i === 0 ? "num" : null }, label),
      ),
    ),
  );
}

function fill(table, events) {
  replace(table, h("caption", { class: "visually-hidden" }, "Events"), headerRow(), h("tbody", {}, events.map(eventRow)));
}

export function eventRow(event) {
  const eventHref = route(`/events/${encodeURIComponent(event.id)}`);
  return h(
    "tr",
    { class: isFailure(event.type) ? "failure" : null, dataset: { id: event.id, position: event.position } },
    h("td", { class: "num" }, h("a", { href: eventHref, "aria-label": `event ${event.position}` }, event.position)),
    h("td", { class: "nowrap" }, time(event.recorded_at)),
    h("td", {}, h("a", { href: eventHref, class: "type" }, event.type)),
    h("td", {}, event.agent_id ? link("/events", { agent_id: event.agent_id }, event.agent_id) : ""),
    h("td", { class: "wrap" }, link(`/streams/${encodeURIComponent(event.stream)}`, {}, event.stream)),
    h("td", { class: "opt wrap" }, event.trace_id ? link(`/traces/${encodeURIComponent(event.trace_id)}`, {}, event.trace_id) : ""),
    h("td", { class: "opt wrap" }, event.task_id ? link("/events", { task_id: event.task_id }, event.task_id) : ""),
    h("td", { class: "opt data" }, h("span", { class: "clip", title: summary(event.data, 400) }, summary(event.data))),
  );
}

function field(name, label, value, attrs = {}) {
  const id = `f-${name}`;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name, value: value || "", autocomplete: "off", ...attrs }),
  );
}

function filterForm(filters, live) {
  const liveBox = h("input", { type: "checkbox", id: "live", name: "live", role: "switch", checked: live });
  const order = h(
    "select",
    { id: "f-order", name: "order" },
    h("option", { value: "desc", selected: filters.order === "desc" }, "newest first"),
    h("option", { value: "asc", selected: filters.order === "asc" }, "oldest first"),
  );
  const form = h(
    "form",
    { class: "filters card", id: "filters", "aria-label": "Filters" },
    h(
      "div",
      { class: "grid" },
      field("type", "Type", (filters.type || []).join(", "), { list: "types", placeholder: "llm.call, llm.error" }),
      field("agent_id", "Agent", filters.agent_id),
      field("stream", "Stream", filters.stream),
      field("trace_id", "Trace", filters.trace_id),
      field("task_id", "Task", filters.task_id),
      field("text", "Text in the payload", filters.text, { type: "search" }),
      field("since", "Since", toLocalInput(filters.since), { type: "datetime-local", step: "1" }),
      field("until", "Until", toLocalInput(filters.until), { type: "datetime-local", step: "1" }),
      h("div", { class: "field" }, h("label", { for: "f-order" }, "Order"), order),
    ),
    h("datalist", { id: "types" }),
    filters.parent_id ? h("input", { type: "hidden", name: "parent_id", value: filters.parent_id }) : null,
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { class: "button quiet", href: "#/events" }, "Clear"),
      h("label", { class: "switch", for: "live" }, liveBox, " Live tail"),
    ),
  );
  const submit = () => {
    const data = new FormData(form);
    const params = {};
    for (const name of FILTERS) {
      let value = String(data.get(name) || "").trim();
      if (name === "since" || name === "until") value = fromLocalInput(value);
      if (name === "type") params.type = value.split(/[\s,]+/).filter(Boolean);
      else params[name] = value;
    }
    if (data.get("order") === "asc") params.order = "asc";
    if (filters.limit !== PAGE) params.limit = filters.limit;
    if (liveBox.checked) params.live = "1";
    window.location.hash = route("/events", params);
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  liveBox.addEventListener("change", submit);
  order.addEventListener("change", submit);
  return form;
}

async function loadTypes(form, signal) {
  try {
    if (!knownTypes) {
      const [catalogue, stats] = await Promise.all([
        get("v1/event-types", {}, { signal }),
        get("v1/stats", window7d(), { signal }),
      ]);
      knownTypes = [...new Set([...stats.by_type.map((t) => t.type), ...catalogue.event_types.map((t) => t.type)])];
    }
    replace(form.querySelector("#types"), knownTypes.map((t) => h("option", { value: t })));
  } catch {
    // suggestions only
  }
}

function window7d() {
  const until = new Date();
  return { since: new Date(until.getTime() - 7 * 86_400_000).toISOString(), until: until.toISOString(), bucket: "1d" };
}
