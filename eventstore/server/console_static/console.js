// The console page: reads the JSON API (/api/...) and builds the view with DOM calls only.
// Every value from the store goes in as a text node (el() never parses markup), so a key or
// value holding "<script>" is shown, never run.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let refreshTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "onclick" || name === "onsubmit" || name === "onchange") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmtInt(n) { return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"); }
function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
}
function fmtMs(ms) { return ms === null || ms === undefined ? "∞" : fmtDuration(ms); }
function fmtDuration(ms) {
  const s = ms / 1000;
  if (s < 120) return s + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  if (s < 172800) return (s / 3600).toFixed(0) + " h";
  return (s / 86400).toFixed(0) + " d";
}
function fmtTime(ms) { return ms === null || ms === undefined ? "—" : new Date(ms).toISOString(); }
function num(value, field) { return el("td", { class: "num", "data-field": field }, fmtInt(value)); }

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function table(headers, rows, id) {
  return el("table", id ? { id } : {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function card(label, value, field) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label),
    el("div", { class: "value", "data-field": field }, value));
}

function link(href, text) { return el("a", { href }, text); }

function shownValue(v) {
  if (v === null) return el("span", { class: "muted" }, "null");
  const note = v.truncated ? ` (first ${v.text.length} of ${fmtInt(v.size)} bytes)` : "";
  return el("div", {}, el("pre", { class: "value" }, v.text), note ? el("span", { class: "muted" }, note) : null);
}

// --- charts: inline SVG polylines -----------------------------------------------------------

function chart(title, times, values, field, unit) {
  const width = 320; const height = 110; const pad = 26;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  const points = values.map((v, i) => [times[i], v]).filter(([, v]) => v !== null && v !== undefined);
  const max = Math.max(1, ...points.map(([, v]) => v));
  const t0 = times.length ? times[0] : 0; const t1 = times.length ? times[times.length - 1] : 1;
  const x = (t) => pad + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (width - pad - 6));
  const y = (v) => height - 16 - (v / max) * (height - 26);
  const axis = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: pad, y1: height - 16, x2: width - 6, y2: height - 16 })) axis.setAttribute(k, v);
  svg.append(axis);
  const top = document.createElementNS(SVG, "text");
  top.setAttribute("x", 2); top.setAttribute("y", 12); top.textContent = fmtInt(Math.round(max));
  svg.append(top);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
  svg.append(line);
  const last = points.length ? points[points.length - 1][1] : null;
  return el("div", { class: "chart", "data-chart": field },
    el("div", { class: "title" }, title, " — now ", el("b", { "data-field": field }, last === null ? "—" : fmtInt(Math.round(last))), unit ? " " + unit : ""),
    svg);
}

// --- views ----------------------------------------------------------------------------------

async function viewTopics() {
  const [overview, data] = await Promise.all([api("/api/overview"), api("/api/topics")]);
  const rows = data.topics.map((t) => el("tr", { "data-topic": t.name },
    el("td", {}, link("#topic/" + encodeURIComponent(t.name), t.name)), num(t.partition_count, "partitions"),
    num(t.records, "records"), el("td", { class: "num", "data-field": "size" }, fmtBytes(t.size_bytes)),
    el("td", { "data-field": "retention" }, fmtMs(t.retention_ms), t.retention_bytes === null ? "" : " / " + fmtBytes(t.retention_bytes)),
    el("td", {}, t.streams ? "streams" : "")));
  return [
    el("div", { class: "cards" }, card("Topics", fmtInt(overview.topics), "topics"),
      card("Partitions", fmtInt(overview.partitions), "partitions"), card("Records", fmtInt(overview.records), "records"),
      card("Size", fmtBytes(overview.size_bytes), "size"), card("Groups", fmtInt(overview.groups), "groups"),
      card("Role", overview.role, "role")),
    el("h2", {}, "Topics"),
    table(["Topic", "Partitions", "Records", "Size", "Retention", ""], rows, "topics"),
  ];
}

async function viewTopic(name) {
  const t = await api("/api/topics/" + encodeURIComponent(name));
  const rows = t.partitions.map((p) => el("tr", { "data-partition": p.partition },
    el("td", {}, String(p.partition)), num(p.log_start_offset, "log_start_offset"), num(p.end_offset, "end_offset"),
    num(p.end_offset - p.log_start_offset, "records"), el("td", { class: "num", "data-field": "size" }, fmtBytes(p.size_bytes)),
    num(p.segments, "segments"), el("td", {}, fmtTime(p.max_timestamp_ms)),
    el("td", {}, link(`#messages?topic=${encodeURIComponent(t.name)}&partition=${p.partition}`, "browse"))));
  return [
    el("h2", {}, "Topic ", el("span", { id: "topic-name" }, t.name)),
    el("p", {}, `retention ${fmtMs(t.retention_ms)}`, t.retention_bytes === null ? "" : ` or ${fmtBytes(t.retention_bytes)} a partition`,
      `, segments of ${fmtBytes(t.segment_bytes)}, timestamps ${t.timestamp_type}`),
    table(["Partition", "Log start", "Log end", "Records", "Size", "Segments", "Last timestamp", ""], rows, "partitions"),
  ];
}

async function viewGroups() {
  const data = await api("/api/groups");
  const rows = data.groups.map((g) => el("tr", { "data-group": g.group },
    el("td", {}, link("#group/" + encodeURIComponent(g.group), g.group)), el("td", {}, g.state),
    num(g.members, "members"), num(g.lag, "lag")));
  return [el("h2", {}, "Consumer groups"), table(["Group", "State", "Members", "Lag"], rows, "groups")];
}

async function viewGroup(name) {
  const g = await api("/api/groups/" + encodeURIComponent(name));
  const rows = g.partitions.map((p) => el("tr", { "data-partition": `${p.topic}-${p.partition}` },
    el("td", {}, p.topic), el("td", {}, String(p.partition)), num(p.committed, "committed"),
    num(p.end_offset, "end_offset"), num(p.lag, "lag")));
  const members = g.members.map((m) => el("tr", {}, el("td", {}, m.member_id), el("td", {}, m.client_id),
    el("td", {}, m.host), el("td", {}, m.assignment.join(", "))));
  const charts = g.history.series.map((s) => chart(`${s.topic}-${s.partition} lag`, g.history.t, s.lag, `lag-${s.topic}-${s.partition}`, "records"));
  return [
    el("h2", {}, "Group ", el("span", { id: "group-name" }, g.group), " ", el("span", { class: "muted" }, `${g.state}, generation ${g.generation}`)),
    table(["Topic", "Partition", "Committed", "Log end", "Lag"], rows, "group-partitions"),
    el("h3", {}, "Lag over the last minutes"),
    el("div", { class: "charts", id: "lag-charts" }, ...(charts.length ? charts : [el("p", { class: "muted" }, "No samples yet.")])),
    el("h3", {}, "Members"),
    members.length ? table(["Member", "Client", "Host", "Assignment"], members, "members") : el("p", { class: "muted" }, "No members."),
  ];
}

async function viewMessages(params) {
  const topics = (await api("/api/topics")).topics;
  const topic = params.get("topic") || (topics.length ? topics[0].name : "");
  const fmt = params.get("format") || "text";
  const form = el("form", { class: "controls", id: "browse" },
    el("label", {}, "Topic", el("select", { name: "topic" }, ...topics.map((t) => {
      const option = el("option", { value: t.name }, t.name);
      if (t.name === topic) option.setAttribute("selected", "");
      return option;
    }))),
    el("label", {}, "Partition", el("input", { name: "partition", type: "number", min: 0, value: params.get("partition") || "0" })),
    el("label", {}, "From offset", el("input", { name: "offset", type: "number", min: 0, value: params.get("offset") || "" })),
    el("label", {}, "or from time (UTC)", el("input", { name: "time", type: "datetime-local", step: 1, value: params.get("time") || "" })),
    el("label", {}, "Show as", el("select", { name: "format" }, ...["text", "json", "hex"].map((f) => {
      const option = el("option", { value: f }, f);
      if (f === fmt) option.setAttribute("selected", "");
      return option;
    }))),
    el("button", { type: "submit", id: "browse-go" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v !== "") next.set(k, v);
    location.hash = "#messages?" + next.toString();
  });
  if (!topic) return [el("h2", {}, "Messages"), el("p", { class: "muted" }, "No topics.")];
  const query = new URLSearchParams({ topic, partition: params.get("partition") || "0", format: fmt, limit: "20" });
  if (params.get("time")) query.set("time", String(Date.parse(params.get("time") + "Z")));
  else if (params.get("offset")) query.set("offset", params.get("offset"));
  const page = await api("/api/messages?" + query.toString());
  const rows = page.records.map((r) => el("tr", { "data-offset": r.offset },
    el("td", { class: "num" }, String(r.offset)), el("td", {}, fmtTime(r.timestamp_ms)),
    el("td", { "data-field": "key" }, shownValue(r.key)), el("td", { "data-field": "value" }, shownValue(r.value)),
    el("td", { "data-field": "headers" }, ...r.headers.map((h) => el("div", {}, el("b", {}, h.key), ": ", shownValue(h.value))))));
  const nextParams = new URLSearchParams({ topic, partition: String(page.partition), offset: String(page.next_offset), format: fmt });
  return [
    el("h2", {}, "Messages"), form,
    el("p", { id: "range" }, `${page.topic}-${page.partition}: offsets ${fmtInt(page.log_start_offset)} to ${fmtInt(page.end_offset)}; showing from ${fmtInt(page.from_offset)}`),
    rows.length ? table(["Offset", "Timestamp", "Key", "Value", "Headers"], rows, "records") : el("p", { class: "muted", id: "no-records" }, "No records here."),
    page.next_offset < page.end_offset ? el("a", { href: "#messages?" + nextParams.toString(), id: "next-page" }, "Next page →") : null,
  ];
}

async function viewStreams(params) {
  const category = params.get("category");
  const data = await api("/api/streams" + (category ? "?category=" + encodeURIComponent(category) : ""));
  const categories = data.categories.map((c) => el("li", { "data-category": c.name },
    link("#streams?category=" + encodeURIComponent(c.name), c.name), " ", el("span", { class: "muted" }, `(${fmtInt(c.streams)})`)));
  const streams = data.streams.map((s) => el("li", {}, link("#stream/" + encodeURIComponent(s), s)));
  return [
    el("h2", {}, "Streams"), el("h3", {}, "Categories"), el("ul", { class: "categories", id: "categories" }, ...categories),
    el("h3", {}, category ? `Streams of ${category}` : "Streams"), el("ul", { id: "streams" }, ...streams),
    data.next_after ? el("p", { class: "muted" }, "More streams than shown.") : null,
  ];
}

async function viewStream(id, params) {
  const fmt = params.get("format") || "json";
  const s = await api(`/api/streams/${encodeURIComponent(id)}?format=${fmt}&from=${params.get("from") || "0"}`);
  const rows = s.events.map((e) => el("tr", { "data-version": e.version },
    num(e.version, "version"), el("td", { "data-field": "type" }, e.type), num(e.position, "position"),
    el("td", {}, fmtTime(e.timestamp_ms)), el("td", { "data-field": "data" }, shownValue(e.data)),
    el("td", {}, shownValue(e.metadata))));
  return [
    el("h2", {}, "Stream ", el("span", { id: "stream-name" }, s.stream), " ", el("span", { class: "muted" }, `version ${s.version}`)),
    table(["Version", "Type", "Position", "Timestamp", "Data", "Metadata"], rows, "events"),
    s.next === null ? null : link(`#stream/${encodeURIComponent(id)}?from=${s.next}&format=${fmt}`, "Next events →"),
  ];
}

async function viewThroughput() {
  const data = await api("/api/throughput");
  const t = data.samples.map((s) => s.t);
  const series = (field) => data.samples.map((s) => s[field]);
  return [
    el("h2", {}, "Throughput"),
    el("p", { class: "muted" }, `Sampled every ${data.interval_s} s; the last ${data.samples_max} samples kept.`),
    el("div", { class: "charts", id: "throughput-charts" },
      chart("Records in / s", t, series("records_in_per_s"), "records_in", ""),
      chart("Records committed by groups / s", t, series("records_committed_per_s"), "records_committed", ""),
      chart("Bytes in / s", t, series("bytes_in_per_s"), "bytes_in", ""),
      chart("Bytes out / s", t, series("bytes_out_per_s"), "bytes_out", "")),
  ];
}

const LIVE = new Set(["groups", "group", "throughput"]);

async function show() {
  clearTimeout(refreshTimer);
  const hash = location.hash.slice(1) || "topics";
  const [path, query] = hash.split("?", 2);
  const params = new URLSearchParams(query || "");
  const slash = path.indexOf("/");
  const name = slash < 0 ? path : path.slice(0, slash);
  const arg = slash < 0 ? "" : decodeURIComponent(path.slice(slash + 1));
  const views = {
    topics: viewTopics, topic: () => viewTopic(arg), groups: viewGroups, group: () => viewGroup(arg),
    messages: () => viewMessages(params), streams: () => viewStreams(params), stream: () => viewStream(arg, params),
    throughput: viewThroughput,
  };
  const view = views[name] || viewTopics;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("current", a.id === "nav-" + name || a.id === "nav-" + name + "s");
  }
  const main = document.getElementById("view");
  try {
    main.replaceChildren(...(await view()).filter((n) => n !== null));
  } catch (error) {
    main.replaceChildren(el("p", { class: "error", id: "error" }, String(error.message || error)));
  }
  main.setAttribute("data-view", name);
  if (LIVE.has(name)) refreshTimer = setTimeout(show, 5000);
}

window.addEventListener("hashchange", show);
window.addEventListener("DOMContentLoaded", show);
