// Streams by name (keyset pages of GET /v1/streams), with a prefix filter.

import { get } from "../api.js";
import { h, heading, link, num, replace, route, time } from "../dom.js";

const PAGE = 50;

export async function render({ main, params, signal }) {
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || null;
  const { streams } = await get("v1/streams", { prefix, after, limit: PAGE + 1 }, { signal });
  const more = streams.length > PAGE;
  const shown = streams.slice(0, PAGE);
  const input = h("input", { id: "prefix", name: "prefix", value: prefix, autocomplete: "off", placeholder: "task:, instance:, trace:" });
  const form = h(
    "form",
    {
      class: "card row",
      onsubmit: (e) => {
        e.preventDefault();
        window.location.hash = route("/streams", { prefix: input.value.trim() });
      },
    },
    h("label", { for: "prefix" }, "Name starts with"),
    input,
    h("button", { type: "submit" }, "Filter"),
  );
  const rows = shown.map((s) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", class: "wrap" }, link(`/streams/${encodeURIComponent(s.stream)}`, {}, s.stream)),
      h("td", { class: "num" }, num(s.version)),
      h("td", { class: "opt" }, time(s.created_at)),
      h("td", {}, time(s.updated_at)),
    ),
  );
  replace(
    main,
    heading("Streams", "Each task, trace and agent instance has its own stream; open one for its timeline and state."),
    form,
    shown.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "events", id: "streams-table" },
            h(
              "thead",
              {},
              h("tr", {}, h("th", { scope: "col" }, "stream"), h("th", { scope: "col", class: "num" }, "events"), h("th", { scope: "col", class: "opt" }, "created"), h("th", { scope: "col" }, "updated")),
            ),
            h("tbody", {}, rows),
          ),
        )
      : h("p", { class: "muted" }, "No stream."),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      after ? link("/streams", { prefix }, "First page") : null,
      more ? link("/streams", { prefix, after: shown[shown.length - 1].stream }, "Next →") : null,
    ),
  );
}
