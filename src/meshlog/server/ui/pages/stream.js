// A stream (a task, a trace, an agent instance's session): its timeline, its state replayed through the session
// projection up to a chosen version, and the resume suggestion.

import { get } from "../api.js";
import { ago, badge, dl, h, heading, isFailure, json, link, num, replace, route, summary, time } from "../dom.js";

const enc = encodeURIComponent;
const PAGE = 100;

export async function render({ main, args, params, signal }) {
  const name = args.name;
  const base = `v1/streams/${enc(name)}`;
  const { version } = await get(`${base}/version`, {}, { signal });
  if (version === 0) {
    replace(main, heading(name), h("p", { class: "muted" }, "This stream has no events."));
    return;
  }
  let chosen = Number.parseInt(params.get("version") || "", 10);
  if (!(chosen >= 1 && chosen <= version)) chosen = version;
  let from = Number.parseInt(params.get("from") || "", 10);
  if (!(from >= 1 && from <= version)) from = Math.max(1, chosen - PAGE + 1);

  const [page, replayed, resume] = await Promise.all([
    get(`${base}/events`, { from_version: from, limit: PAGE }, { signal }),
    get(`${base}/state`, { to_version: chosen }, { signal }),
    get(`${base}/resume`, {}, { signal }),
  ]);
  const instanceId = name.startsWith("instance:") ? name.slice("instance:".length) : null;
  const instance = instanceId ? await get(`v1/instances/${enc(instanceId)}`, {}, { signal }).catch(() => null) : null;

  const slider = h("input", {
    type: "range",
    id: "version-range",
    min: "1",
    max: String(version),
    value: String(chosen),
    "aria-describedby": "version-note",
  });
  const number = h("input", { type: "number", id: "version", name: "version", min: "1", max: String(version), value: String(chosen) });
  slider.addEventListener("input", () => {
    number.value = slider.value;
  });
  number.addEventListener("input", () => {
    slider.value = number.value;
  });
  const replayForm = h(
    "form",
    {
      class: "replay row",
      id: "replay",
      onsubmit: (e) => {
        e.preventDefault();
        const v = Math.min(version, Math.max(1, Number.parseInt(number.value, 10) || version));
        window.location.hash = route(`/streams/${enc(name)}`, { version: v === version ? null : v });
      },
    },
    h("label", { for: "version" }, "Replay to version"),
    slider,
    number,
    h("button", { type: "submit" }, "Replay"),
    chosen !== version ? link(`/streams/${enc(name)}`, {}, "Latest") : null,
  );

  const state = replayed.state;
  const timeline = h(
    "ol",
    { class: "timeline", id: "timeline" },
    page.events.map((e) => {
      const after = e.stream_position > chosen;
      return h(
        "li",
        {
          class: `${after ? "after" : ""}${isFailure(e.type) ? " failure" : ""}${e.stream_position === chosen ? " chosen" : ""}`,
          dataset: { version: e.stream_position },
        },
        h("span", { class: "v" }, `#${e.stream_position}`),
        h("span", { class: "when" }, time(e.occurred_at || e.recorded_at, { date: false })),
        h("span", { class: "what" }, link(`/events/${enc(e.id)}`, {}, e.type), e.agent_id ? h("span", { class: "muted" }, ` · ${e.agent_id}`) : null),
        h("span", { class: "data muted" }, summary(e.data, 100)),
        h("span", { class: "go" }, link(`/streams/${enc(name)}`, { version: e.stream_position }, "replay to here")),
      );
    }),
  );
  const older = from > 1 ? link(`/streams/${enc(name)}`, { version: chosen, from: Math.max(1, from - PAGE) }, "← Earlier") : null;
  const lastShown = page.events.length ? page.events[page.events.length - 1].stream_position : from;
  const newer = lastShown < version ? link(`/streams/${enc(name)}`, { version: chosen, from: lastShown + 1 }, "Later →") : null;

  replace(
    main,
    heading(name, `${num(version)} events`, instance ? " · " : null, instance ? badge(instance.status) : null, instance ? ` last heartbeat ${ago(instance.last_heartbeat)}` : null),
    h(
      "nav",
      { class: "actions", "aria-label": "Related views" },
      link("/events", { stream: name, order: "asc" }, "Events of this stream"),
      h("a", { href: `${base}/narrative` }, "Narrative (Markdown)"),
    ),
    h(
      "section",
      { class: "card resume", id: "resume", "aria-labelledby": "resume-h" },
      h("h2", { id: "resume-h" }, "Resume"),
      resume.suggestion ? h("p", { class: "suggestion" }, resume.suggestion.text) : h("p", { class: "muted" }, "No suggestion."),
      resume.suggestion ? h("p", { class: "muted small" }, `rule ${resume.suggestion.rule}, priority ${resume.suggestion.priority}`) : null,
    ),
    h(
      "div",
      { class: "columns two" },
      h(
        "section",
        { class: "card", "aria-labelledby": "tl-h" },
        h("h2", { id: "tl-h" }, "Timeline"),
        timeline,
        older || newer ? h("nav", { class: "pager", "aria-label": "Timeline pages" }, older, newer) : null,
      ),
      h(
        "section",
        { class: "card", id: "state", "aria-labelledby": "state-h" },
        h("h2", { id: "state-h" }, "Replayed state"),
        replayForm,
        h(
          "p",
          { class: "muted small", id: "version-note" },
          `SessionState after version ${replayed.last_version} (${num(replayed.events_replayed)} events replayed in ${replayed.duration_ms.toFixed(1)} ms).`,
        ),
        stateView(state),
        h("details", {}, h("summary", {}, "The whole state as JSON"), json(state, "State JSON")),
      ),
    ),
  );
}

function stateView(state) {
  const counts = Object.entries(state.counts || {}).sort((a, b) => b[1] - a[1]);
  const pairs = [
    ["last event", state.last_event_type],
    ["latest", time(state.latest_timestamp)],
    ["events", num(state.total_events_replayed)],
    ["open epic", state.epics?.open ? String(state.epics.open) : null],
    ["last epic", state.last_epic ? String(state.last_epic) : null],
    ["errors", state.errors?.count ? h("span", { class: "bad" }, num(state.errors.count)) : "0"],
    ["tests", state.tests?.runs ? `${state.tests.passed} passed, ${state.tests.failed} failed in ${state.tests.runs} runs` : null],
    ["deployments", state.deployments ? `${state.deployments.open.length} open, ${state.deployments.finished.length} finished` : null],
    ["context used", state.context_percent === null || state.context_percent === undefined ? null : `${Math.round(state.context_percent)}%`],
  ];
  return h(
    "div",
    {},
    dl(pairs),
    counts.length
      ? h(
          "table",
          { class: "counts", id: "state-counts" },
          h("caption", {}, "Events by type"),
          h("tbody", {}, counts.map(([type, count]) => h("tr", {}, h("th", { scope: "row" }, type), h("td", { class: "num" }, num(count))))),
        )
      : null,
    state.errors?.recent?.length
      ? h(
          "div",
          {},
          h("h3", {}, "Recent errors"),
          h(
            "ul",
            { class: "plain" },
            state.errors.recent.map((e) =>
              h("li", {}, link(`/events/${enc(e.event_id)}`, {}, e.type), `: ${e.message || ""} `, h("span", { class: "muted" }, ago(e.at))),
            ),
          ),
        )
      : null,
  );
}
