// The instance registry: each agent session's status, last heartbeat and a link to its stream.

import { get } from "../api.js";
import { ago, badge, h, heading, link, replace, route, time } from "../dom.js";

const PAGE = 50;
const STATUSES = ["active", "stale", "closed"];

export async function render({ main, params, signal }) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const project = params.get("project") || "";
  const after = params.get("after") || null;
  const { instances } = await get("v1/instances", { status, project, after, limit: PAGE + 1 }, { signal });
  const more = instances.length > PAGE;
  const shown = instances.slice(0, PAGE);

  const select = h(
    "select",
    { id: "i-status", name: "status" },
    h("option", { value: "", selected: status === "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: status === s }, s)),
  );
  const projectInput = h("input", { id: "i-project", name: "project", value: project, autocomplete: "off" });
  const apply = () => {
    window.location.hash = route("/instances", { status: select.value, project: projectInput.value.trim() });
  };
  select.addEventListener("change", apply);
  const form = h(
    "form",
    {
      class: "card row",
      onsubmit: (e) => {
        e.preventDefault();
        apply();
      },
    },
    h("label", { for: "i-status" }, "Status"),
    select,
    h("label", { for: "i-project" }, "Project"),
    projectInput,
    h("button", { type: "submit" }, "Filter"),
  );
  const now = Date.now();
  const rows = shown.map((i) =>
    h(
      "tr",
      { dataset: { id: i.id, status: i.status } },
      h("th", { scope: "row" }, link(`/streams/${encodeURIComponent(i.stream)}`, {}, i.name || i.id), i.name && i.name !== i.id ? h("div", { class: "muted small" }, i.id) : null),
      h("td", {}, badge(i.status)),
      h("td", {}, h("span", { title: i.last_heartbeat || "" }, ago(i.last_heartbeat, now))),
      h("td", { class: "opt" }, i.project || ""),
      h("td", { class: "opt" }, i.host || ""),
      h("td", { class: "opt" }, time(i.registered_at)),
      h("td", {}, link(`/streams/${encodeURIComponent(i.stream)}`, {}, i.stream)),
    ),
  );
  replace(
    main,
    heading("Instances", "Agent sessions registered with this server; an instance without heartbeats turns stale."),
    form,
    shown.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "events", id: "instances-table" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["instance", "status", "last heartbeat", "project", "host", "registered", "stream"].map((label, n) =>
                  h("th", { scope: "col", class: n >= 3 && n <= 5 ? "opt" : null }, label),
                ),
              ),
            ),
            h("tbody", {}, rows),
          ),
        )
      : h("p", { class: "muted" }, "No instance registered", status ? ` with status ${status}` : "", "."),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      after ? link("/instances", { status, project }, "First page") : null,
      more ? link("/instances", { status, project, after: shown[shown.length - 1].id }, "Next →") : null,
    ),
  );
}
