// An event's lineage: the graph of its parents, children and related events (GET /v1/events/{id}/graph) drawn
// in layers (causes above, effects below); each node is a link that recentres the graph on that event.

import { get } from "../api.js";
import { dl, h, heading, isFailure, link, replace, route, summary, svg, time } from "../dom.js";

const enc = encodeURIComponent;
const NODE_W = 184;
const NODE_H = 50;
const GAP_X = 18;
const GAP_Y = 54;
const PAD = 12;
/** The most events drawn: a wider graph keeps the nearest (the server says it was cut). */
const MAX_NODES = 200;
const DEPTHS = [1, 2, 3, 4];

export async function render({ main, args, params, signal }) {
  const depth = DEPTHS.includes(Number(params.get("depth"))) ? Number(params.get("depth")) : 2;
  const graph = await get(`v1/events/${enc(args.id)}/graph`, { max_depth: depth, limit: MAX_NODES }, { signal });
  const byId = new Map(graph.nodes.map((n) => [n.event.id, n.event]));
  const start = byId.get(graph.start);
  const layers = layout(graph);

  const parents = graph.edges.filter((e) => e.kind === "parent" && e.source === graph.start).map((e) => byId.get(e.target));
  const children = graph.edges.filter((e) => e.kind === "parent" && e.target === graph.start).map((e) => byId.get(e.source));
  const related = graph.edges
    .filter((e) => e.kind !== "parent" && (e.source === graph.start || e.target === graph.start))
    .map((e) => byId.get(e.source === graph.start ? e.target : e.source));

  const depthNav = h(
    "nav",
    { class: "segmented", "aria-label": "Hops" },
    DEPTHS.map((d) =>
      h("a", { href: route(`/lineage/${enc(graph.start)}`, { depth: d }), "aria-current": d === depth ? "true" : null }, `${d} hop${d > 1 ? "s" : ""}`),
    ),
  );

  replace(
    main,
    heading(
      `Lineage of ${start.type}`,
      graph.truncated
        ? `The ${graph.nodes.length} nearest events within ${depth} hop${depth > 1 ? "s" : ""} (there are more: see the event's children in the events list); causes above, effects below. Select an event to centre on it.`
        : `${graph.nodes.length} events within ${depth} hop${depth > 1 ? "s" : ""}; causes above, effects below. Select an event to centre on it.`,
    ),
    h("div", { class: "toolbar" }, depthNav, link(`/events/${enc(start.id)}`, {}, "Open the event")),
    h("div", { class: "card graph-wrap", id: "graph" }, drawing(graph, byId, layers)),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "card", "aria-labelledby": "sel-h" },
        h("h2", { id: "sel-h" }, "This event"),
        dl([
          ["type", link(`/events/${enc(start.id)}`, {}, start.type)],
          ["agent", start.agent_id],
          ["stream", link(`/streams/${enc(start.stream)}`, {}, start.stream)],
          ["trace", start.trace_id ? link(`/traces/${enc(start.trace_id)}`, {}, start.trace_id) : null],
          ["occurred", time(start.occurred_at)],
          ["data", summary(start.data, 200)],
        ]),
      ),
      neighbours("Parent", "parents", parents),
      neighbours("Children", "children", children),
      neighbours("Related", "related", related),
    ),
  );
}

function neighbours(title, id, events) {
  return h(
    "section",
    { class: "card", id: `n-${id}`, "aria-labelledby": `n-${id}-h` },
    h("h2", { id: `n-${id}-h` }, title),
    events.length
      ? h(
          "ul",
          { class: "plain" },
          events.map((e) => h("li", {}, link(`/lineage/${enc(e.id)}`, {}, e.type), h("span", { class: "muted" }, ` · ${e.agent_id || "no agent"} · #${e.position}`))),
        )
      : h("p", { class: "muted" }, "None."),
  );
}

/** Each node's layer: 0 for the start, -1 for its parent, +1 for its children; related events share a layer. */
function layout(graph) {
  const layer = new Map([[graph.start, 0]]);
  const queue = [graph.start];
  while (queue.length) {
    const id = queue.shift();
    for (const edge of graph.edges) {
      let other = null;
      let value = 0;
      if (edge.source === id) {
        other = edge.target;
        value = layer.get(id) + (edge.kind === "parent" ? -1 : 0);
      } else if (edge.target === id) {
        other = edge.source;
        value = layer.get(id) + (edge.kind === "parent" ? 1 : 0);
      }
      if (other !== null && !layer.has(other)) {
        layer.set(other, value);
        queue.push(other);
      }
    }
  }
  for (const node of graph.nodes) if (!layer.has(node.event.id)) layer.set(node.event.id, node.distance);
  const rows = new Map();
  for (const node of graph.nodes) {
    const l = layer.get(node.event.id);
    if (!rows.has(l)) rows.set(l, []);
    rows.get(l).push(node.event);
  }
  const keys = [...rows.keys()].sort((a, b) => a - b);
  return keys.map((k) => rows.get(k).sort((a, b) => a.position - b.position));
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function drawing(graph, byId, layers) {
  const widest = Math.max(...layers.map((row) => row.length));
  const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X;
  const height = PAD * 2 + layers.length * NODE_H + (layers.length - 1) * GAP_Y;
  const place = new Map();
  layers.forEach((row, r) => {
    const rowWidth = row.length * NODE_W + (row.length - 1) * GAP_X;
    const x0 = (width - rowWidth) / 2;
    row.forEach((event, i) => place.set(event.id, { x: x0 + i * (NODE_W + GAP_X), y: PAD + r * (NODE_H + GAP_Y) }));
  });

  const edges = svg("g", { class: "edges" });
  for (const edge of graph.edges) {
    const a = place.get(edge.source);
    const b = place.get(edge.target);
    if (!a || !b) continue;
    if (edge.kind === "parent") {
      // from the parent (target) down to the child (source): cause -> effect
      const x1 = b.x + NODE_W / 2;
      const y1 = b.y + NODE_H;
      const x2 = a.x + NODE_W / 2;
      const y2 = a.y;
      const my = (y1 + y2) / 2;
      edges.append(svg("path", { class: "edge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2 - 4}`, "marker-end": "url(#arrow)" }));
    } else {
      const x1 = a.x + NODE_W / 2;
      const x2 = b.x + NODE_W / 2;
      const y = Math.min(a.y, b.y);
      edges.append(svg("path", { class: "edge related", d: `M${x1},${a.y} C${x1},${y - 30} ${x2},${y - 30} ${x2},${b.y}` }));
    }
  }

  const nodes = svg("g", { class: "nodes" });
  for (const [id, p] of place) {
    const event = byId.get(id);
    const cls = ["node", id === graph.start ? "start" : "", isFailure(event.type) ? "failure" : ""].filter(Boolean).join(" ");
    const label = `${event.type} by ${event.agent_id || "no agent"}, position ${event.position}`;
    nodes.append(
      svg(
        "a",
        { href: route(`/lineage/${enc(id)}`), class: cls, "aria-label": label, dataset: { id, type: event.type } },
        svg("title", {}, label),
        svg("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 8 }),
        svg("text", { x: p.x + 10, y: p.y + 20, class: "t" }, clip(event.type, 24)),
        svg("text", { x: p.x + 10, y: p.y + 38, class: "s" }, clip(`${event.agent_id || "–"} · #${event.position}`, 28)),
      ),
    );
  }
  const defs = svg(
    "defs",
    {},
    svg(
      "marker",
      { id: "arrow", viewBox: "0 0 10 10", refX: "8", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }),
    ),
  );
  return svg(
    "svg",
    { class: "lineage", width, height, viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": "Lineage graph" },
    defs,
    edges,
    nodes,
  );
}
