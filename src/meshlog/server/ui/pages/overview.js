// Overview: events per bucket (an SVG bar chart), by type, by agent, failures, and the instances' health.
// Every number links to the events list filtered to what it counts.

import { get } from "../api.js";
import { ago, h, heading, link, num, replace, route, svg, time } from "../dom.js";

/** The windows offered, with a bucket that gives about 60 bars (the traces page offers the same windows). */
export const WINDOWS = {
  "15m": { label: "15 minutes", ms: 15 * 60_000, bucket: "15s" },
  "1h": { label: "hour", ms: 3_600_000, bucket: "1m" },
  "6h": { label: "6 hours", ms: 6 * 3_600_000, bucket: "6m" },
  "24h": { label: "24 hours", ms: 24 * 3_600_000, bucket: "24m" },
  "7d": { label: "7 days", ms: 7 * 86_400_000, bucket: "3h" },
};

const INSTANCE_PAGE = 1000;

export async function render({ main, params, signal }) {
  const key = WINDOWS[params.get("window")] ? params.get("window") : "1h";
  const win = WINDOWS[key];
  const until = new Date();
  const since = new Date(until.getTime() - win.ms);
  const [stats, active, stale] = await Promise.all([
    get("v1/stats", { since: since.toISOString(), until: until.toISOString(), bucket: win.bucket }, { signal }),
    instancesOf("active", signal),
    instancesOf("stale", signal),
  ]);
  const range = { since: stats.since, until: stats.until };

  const picker = h(
    "nav",
    { class: "segmented", "aria-label": "Time window" },
    Object.entries(WINDOWS).map(([k, w]) =>
      h("a", { href: route("/", { window: k }), "aria-current": k === key ? "true" : null }, w.label),
    ),
  );
  const refresh = h("a", { class: "button quiet", href: route("/", { window: key, t: Date.now() }) }, "Refresh");
  const traces = h("a", { class: "button quiet", id: "to-traces", href: route("/traces", { window: key }) }, "Recent traces");

  const chartBox = h("div", { class: "chart" });
  const failureTypes = stats.failures_by_type.map((f) => f.type);

  const cards = h(
    "div",
    { class: "cards" },
    card("Events", stats.total, route("/events", range), `in the last ${win.label}`, "total"),
    card(
      "Failures",
      stats.failures,
      failureTypes.length ? route("/events", { ...range, type: failureTypes }) : null,
      failureTypes.length ? failureTypes.join(", ") : "none",
      "failures",
      stats.failures > 0 ? "bad" : null,
    ),
    card("Agents", stats.by_agent.filter((a) => a.agent_id !== null).length, null, "that wrote events", "agents"),
    card("Active instances", countOf(active), route("/instances", { status: "active" }), "heartbeating", "active"),
    card(
      "Stale instances",
      countOf(stale),
      route("/instances", { status: "stale" }),
      "no heartbeat lately",
      "stale",
      stale.length ? "warn" : null,
    ),
  );

  replace(
    main,
    heading("Overview", `What was recorded in the last ${win.label}: `, time(stats.since), " – ", time(stats.until)),
    h("div", { class: "toolbar" }, picker, h("div", { class: "row" }, traces, refresh)),
    cards,
    h(
      "section",
      { class: "card", "aria-labelledby": "chart-h" },
      h("h2", { id: "chart-h" }, `Events per ${bucketLabel(stats.bucket_seconds)}`),
      chartBox,
    ),
    h(
      "div",
      { class: "columns" },
      countTable("By type", "by-type", stats.by_type, (r) => r.type, (r) => route("/events", { ...range, type: r.type })),
      countTable(
        "By agent",
        "by-agent",
        stats.by_agent,
        (r) => r.agent_id ?? "(no agent)",
        (r) => (r.agent_id === null ? null : route("/events", { ...range, agent_id: r.agent_id })),
      ),
      countTable(
        "Errors and failures",
        "failures",
        stats.failures_by_type,
        (r) => r.type,
        (r) => route("/events", { ...range, type: r.type }),
        "No errors or failures.",
      ),
    ),
    instanceSection(active, stale),
  );
  // drawn at the box's width, so that its text keeps its size on any screen
  let drawn = 0;
  const draw = () => {
    const width = Math.round(chartBox.clientWidth);
    if (width > 0 && width !== drawn) {
      drawn = width;
      replace(chartBox, chart(stats, width));
    }
  };
  draw();
  const observer = new ResizeObserver(draw);
  observer.observe(chartBox);
  signal.addEventListener("abort", () => observer.disconnect());
}

/** The instances of one status, one request (closed ones are never read), at most a page of them. */
async function instancesOf(status, signal) {
  return (await get("v1/instances", { status, limit: INSTANCE_PAGE }, { signal })).instances;
}

/** How many instances a list holds: "1,000+" for a full page. */
function countOf(instances) {
  return instances.length < INSTANCE_PAGE ? instances.length : `${num(INSTANCE_PAGE)}+`;
}

function card(title, value, href, note, id, tone) {
  const number = h("span", { class: "value", "data-count": id }, typeof value === "string" ? value : num(value));
  return h(
    "div",
    { class: `stat${tone ? ` stat-${tone}` : ""}`, id: `stat-${id}` },
    h("h2", {}, title),
    href ? h("a", { href }, number) : number,
    h("p", { class: "muted small" }, note),
  );
}

function bucketLabel(seconds) {
  if (seconds % 3600 === 0) return seconds === 3600 ? "hour" : `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return seconds === 60 ? "minute" : `${seconds / 60} minutes`;
  return `${seconds} seconds`;
}

/** The timeline as an SVG bar chart; each bar links to that bucket's events. */
function chart(stats, width) {
  const buckets = stats.timeline;
  const height = 180;
  const left = 40;
  const bottom = 22;
  const plotH = height - bottom - 8;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const step = (width - left) / Math.max(1, buckets.length);
  const bars = svg("g", { class: "bars" });
  buckets.forEach((b, i) => {
    const barH = b.count ? Math.max(2, (b.count / max) * plotH) : 0;
    const end = i + 1 < buckets.length ? buckets[i + 1].start : stats.until;
    const x = left + i * step;
    const label = `${num(b.count)} events from ${new Date(b.start).toLocaleTimeString()}`;
    const group = svg(
      "a",
      { href: route("/events", { since: b.start, until: end }), "aria-label": label },
      svg("title", {}, label),
      svg("rect", { class: "hit", x, y: 8, width: step, height: plotH }),
      svg("rect", { class: "bar", x: x + step * 0.12, y: 8 + plotH - barH, width: step * 0.76, height: barH }),
    );
    bars.append(group);
  });
  const axis = svg("g", { class: "axis" });
  for (const fraction of [0, 0.5, 1]) {
    const y = 8 + plotH - fraction * plotH;
    axis.append(
      svg("line", { x1: left, x2: width, y1: y, y2: y }),
      svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, num(Math.round(fraction * max))),
    );
  }
  const ticks = Math.min(width < 500 ? 3 : 6, buckets.length);
  for (let t = 0; t < ticks; t++) {
    const i = Math.round((t * (buckets.length - 1)) / Math.max(1, ticks - 1));
    const d = new Date(buckets[i].start);
    const text = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    const anchor = t === 0 ? "start" : t === ticks - 1 ? "end" : "middle";
    const x = t === 0 ? left + i * step : t === ticks - 1 ? left + (i + 1) * step : left + i * step + step / 2;
    axis.append(svg("text", { x, y: height - 4, "text-anchor": anchor }, text));
  }
  return svg(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "group",
      "aria-label": `Events per bucket, ${num(stats.total)} in all, at most ${num(max)} in one bucket`,
      class: "bar-chart",
    },
    axis,
    bars,
  );
}

function countTable(title, id, rows, name, href, empty = "No events.") {
  const body = h("tbody");
  const most = Math.max(1, ...rows.map((r) => r.count));
  for (const row of rows) {
    const target = href(row);
    const meter = h("span", { class: "meter" });
    meter.style.width = `${Math.max(2, (row.count / most) * 100)}%`;
    body.append(
      h(
        "tr",
        {},
        h("th", { scope: "row" }, target ? h("a", { href: target }, name(row)) : name(row)),
        h("td", { class: "num" }, target ? h("a", { href: target, "aria-label": `${row.count} ${name(row)}` }, num(row.count)) : num(row.count)),
        h("td", { class: "meter-cell", "aria-hidden": "true" }, meter),
      ),
    );
  }
  return h(
    "section",
    { class: "card", id, "aria-labelledby": `${id}-h` },
    h("h2", { id: `${id}-h` }, title),
    rows.length
      ? h(
          "table",
          { class: "counts" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "name"), h("th", { scope: "col", class: "num" }, "events"), h("td"))),
          body,
        )
      : h("p", { class: "muted" }, empty),
  );
}

function instanceSection(active, stale) {
  const list = [...stale, ...active].slice(0, 10);
  return h(
    "section",
    { class: "card", "aria-labelledby": "inst-h" },
    h("h2", { id: "inst-h" }, "Instances"),
    list.length
      ? h(
          "ul",
          { class: "plain" },
          list.map((i) =>
            h(
              "li",
              {},
              h("span", { class: `badge badge-${i.status}` }, i.status),
              " ",
              link(`/streams/${encodeURIComponent(i.stream)}`, {}, i.name || i.id),
              h("span", { class: "muted" }, ` · last heartbeat ${ago(i.last_heartbeat)}`),
            ),
          ),
          h("li", {}, link("/instances", {}, "All instances")),
        )
      : h("p", { class: "muted" }, "No active or stale instance. ", link("/instances", {}, "All instances")),
  );
}
