"use strict";
// sqltrack ui: fills the page from the JSON API named in <body data-api>.
// Data is only ever set as text (textContent, text nodes, properties), never
// parsed as HTML; links are built from numeric ids.

// -- helpers -------------------------------------------------------------------
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function link(href, text) {
  return el("a", { href, text: String(text) });
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(target, error) {
  target.replaceChildren(el("p", { class: "error", text: String(error.message || error) }));
}

// plotly.min.js loads asynchronously (see pages.py): wait for it only to draw.
function plotlyReady() {
  return new Promise((resolve, reject) => {
    if (window.Plotly) { resolve(window.Plotly); return; }
    const script = document.getElementById("plotly-js");
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("could not load /static/plotly.min.js")));
  });
}

function rendered() {
  window.sqltrackRenderMs = Math.round(performance.now());
  document.body.dataset.rendered = "true";
}

// -- formatting ----------------------------------------------------------------
function fmtTime(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  let total = Math.round(Math.abs(seconds));
  const sign = seconds < 0 ? "-" : "";
  const d = Math.floor(total / 86400); total %= 86400;
  const h = Math.floor(total / 3600); total %= 3600;
  const m = Math.floor(total / 60); const s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (d) return `${sign}${d}d${two(h)}h${two(m)}m`;
  if (h) return `${sign}${h}h${two(m)}m${two(s)}s`;
  if (m) return `${sign}${m}m${two(s)}s`;
  return `${sign}${s}s`;
}

function fmtValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs >= 1e-4 && abs < 1e7 ? String(Number(value.toPrecision(6)))
      : value.toExponential(4);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// Plotly reads a few HTML-like tags in its text; show names exactly as they are.
function plotlyText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function statusCell(status) {
  return el("span", { class: `status status-${status.toLowerCase().replace(/[^a-z_]/g, "")}`,
    text: status });
}

// -- sortable tables -------------------------------------------------------------
// columns: [{label, sort: row => value, cell: row => Node|string, num: bool}]
const isMissing = (value) => value === null || value === undefined || value === "";

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function sortableTable(columns, rows) {
  const entries = rows.map((row) => {
    const tr = el("tr");
    for (const column of columns) {
      const content = column.cell(row);
      tr.append(el("td", column.num ? { class: "num" } : {},
        [content instanceof Node ? content : String(content ?? "")]));
    }
    return { row, tr };
  });
  const tbody = el("tbody", {}, entries.map((e) => e.tr));
  const headers = columns.map((column, index) => {
    const button = el("button", { type: "button", text: column.label });
    const th = el("th", { scope: "col", "aria-sort": "none" }, [button]);
    if (column.num) th.className = "num";
    if (!column.sort) { button.disabled = true; return th; }
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      for (const other of thead.querySelectorAll("th")) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const sign = ascending ? 1 : -1;
      entries.sort((x, y) => {
        const a = column.sort(x.row);
        const b = column.sort(y.row);
        if (isMissing(a) || isMissing(b)) return isMissing(a) - isMissing(b); // missing last
        return sign * compareValues(a, b);
      });
      tbody.append(...entries.map((e) => e.tr));
    });
    return th;
  });
  const thead = el("thead", {}, [el("tr", {}, headers)]);
  return el("table", { class: "sortable" }, [thead, tbody]);
}

// -- pages ---------------------------------------------------------------------
async function experimentsPage(api) {
  const target = document.getElementById("table");
  const data = await getJSON(api);
  if (!data.experiments.length) {
    target.replaceChildren(el("p", { class: "note", text: "No experiments yet." }));
    rendered();
    return;
  }
  target.replaceChildren(sortableTable([
    { label: "id", sort: (e) => e.id, cell: (e) => link(`/experiments/${e.id}`, e.id), num: true },
    { label: "name", sort: (e) => e.name, cell: (e) => link(`/experiments/${e.id}`, e.name) },
    { label: "created", sort: (e) => e.created, cell: (e) => fmtTime(e.created) },
    { label: "runs", sort: (e) => e.runs, cell: (e) => e.runs, num: true },
    { label: "tags", sort: (e) => e.tags.join(", "), cell: (e) => e.tags.join(", ") },
    { label: "comment", sort: (e) => e.comment, cell: (e) => e.comment ?? "" },
  ], data.experiments));
  rendered();
}

async function experimentPage(api) {
  const target = document.getElementById("table");
  const data = await getJSON(api);
  const filters = [data.filters.status, ...data.filters.tags].filter(Boolean);
  document.getElementById("meta").textContent = `${data.runs.length} run` +
    `${data.runs.length === 1 ? "" : "s"}${filters.length ? ` (filtered: ${filters.join(", ")})` : ""}` +
    `${data.experiment.comment ? ` · ${data.experiment.comment}` : ""}`;
  if (!data.runs.length) {
    target.replaceChildren(el("p", { class: "note", text: "No runs match." }));
    rendered();
    return;
  }
  const selected = new Set();
  const select = (run) => {
    const box = el("input", { type: "checkbox", "aria-label": `select run ${run.id}` });
    box.addEventListener("change", () => (box.checked ? selected.add(run.id) : selected.delete(run.id)));
    return box;
  };
  const columns = [
    { label: "", cell: select },
    { label: "run", sort: (r) => r.id, cell: (r) => link(`/runs/${r.id}`, r.id), num: true },
    { label: "status", sort: (r) => r.status, cell: (r) => statusCell(r.status) },
    { label: "started", sort: (r) => r.started, cell: (r) => fmtTime(r.started) },
    { label: "updated", sort: (r) => r.updated, cell: (r) => fmtTime(r.updated) },
    { label: "duration", sort: (r) => r.duration_seconds, cell: (r) => fmtDuration(r.duration_seconds), num: true },
    { label: "tags", sort: (r) => r.tags.join(", "), cell: (r) => r.tags.join(", ") },
    ...data.metrics.map((name) => ({
      label: name, sort: (r) => r.metrics[name], cell: (r) => fmtValue(r.metrics[name]), num: true,
    })),
  ];
  target.replaceChildren(sortableTable(columns, data.runs));
  setUpCompare(data, selected);
  rendered();
}

function setUpCompare(data, selected) {
  const form = document.getElementById("compare");
  if (!data.plottable.length) return;
  const metric = form.elements.metric;
  metric.replaceChildren(...data.plottable.map((name) => {
    const option = el("option", { text: name });
    option.value = name;
    return option;
  }));
  form.addEventListener("submit", () => {
    const ids = selected.size ? [...selected] : data.runs.slice(0, 50).map((r) => r.id);
    form.elements.runs.value = ids.join(",");
  });
  form.hidden = false;
}

function details(run) {
  const rows = [
    ["experiment", link(`/experiments/${run.experiment_id}`, run.experiment)],
    ["status", statusCell(run.status)],
    ["created", fmtTime(run.created)], ["started", fmtTime(run.started)],
    ["updated", fmtTime(run.updated)], ["duration", fmtDuration(run.duration_seconds)],
    ["comment", run.comment ?? ""], ["tags", run.tags.join(", ")],
    ["args", el("pre", { text: JSON.stringify(run.args, null, 2) })],
    ["extras", el("pre", { text: JSON.stringify(run.extras, null, 2) })],
    ["env keys", run.env_keys.join(", ")],
    ["links", el("span", {}, run.links.flatMap((l) => {
      const other = l.from === run.id ? l.to : l.from;
      const arrow = l.from === run.id ? `${l.kind} → ` : `← ${l.kind} `;
      return [arrow, link(`/runs/${other}`, `run ${other}`), " "];
    }))],
  ];
  return el("dl", { class: "details" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, [v])]));
}

const PLOT_CONFIG = { responsive: true, displaylogo: false };

function layout(title, xTitle, extra = {}) {
  return {
    title: { text: plotlyText(title), font: { size: 14 } },
    margin: { l: 56, r: 16, t: 40, b: 40 },
    xaxis: { title: { text: xTitle } },
    font: { family: "system-ui, sans-serif", size: 12 },
    ...extra,
  };
}

function pointsNote(curve) {
  const shown = curve.points.toLocaleString();
  const total = (curve.total - curve.non_finite).toLocaleString();
  let text = curve.downsampled ? `${shown} of ${total} points (min and max of each bucket kept)`
    : `${shown} points`;
  if (curve.non_finite) text += `, ${curve.non_finite} NaN/inf left out`;
  return text;
}

async function runPage(api) {
  const curves = getJSON(`${api}/metrics?max_points=2000`); // both requests at once
  curves.catch(() => {}); // reported below, when awaited
  const run = await getJSON(api);
  document.getElementById("details").replaceChildren(details(run));
  const summary = document.getElementById("summary");
  if (!run.metrics.length) {
    summary.replaceChildren(el("p", { class: "note", text: "No metrics yet." }));
    rendered();
    return;
  }
  summary.replaceChildren(sortableTable([
    { label: "metric", sort: (m) => m.metric, cell: (m) => m.metric },
    { label: "count", sort: (m) => m.count, cell: (m) => m.count, num: true },
    { label: "min", sort: (m) => m.min, cell: (m) => fmtValue(m.min), num: true },
    { label: "max", sort: (m) => m.max, cell: (m) => fmtValue(m.max), num: true },
    { label: "last", sort: (m) => m.last, cell: (m) => fmtValue(m.last), num: true },
  ], run.metrics));
  const charts = document.getElementById("charts");
  const data = await curves;
  const entries = Object.entries(data.metrics);
  const Plotly = entries.length ? await plotlyReady() : null;
  const drawn = entries.map(([name, curve]) => {
    const plot = el("div", { class: "chart" });
    charts.append(el("figure", {}, [plot, el("figcaption", { text: pointsNote(curve) })]));
    const trace = { x: curve.x, y: curve.y, type: "scatter", mode: "lines", name: plotlyText(name) };
    return Plotly.newPlot(plot, [trace], layout(name, data.x), PLOT_CONFIG);
  });
  await Promise.all(drawn);
  rendered();
}

async function comparePage(api) {
  const data = await getJSON(api);
  const Plotly = await plotlyReady();
  const chart = document.getElementById("chart");
  chart.replaceChildren();
  const traces = data.runs.map((run) => ({
    x: run.x, y: run.y, type: "scatter", mode: "lines", name: `run ${run.id}`,
    hovertemplate: `run ${run.id} (${plotlyText(run.experiment)}): %{y}<extra></extra>`,
  }));
  await Plotly.newPlot(chart, traces, layout(data.metric, data.x, { hovermode: "x" }), PLOT_CONFIG);
  const last = (run) => (run.y.length ? run.y[run.y.length - 1] : null);
  const low = (run) => (run.y.length ? Math.min(...run.y) : null);
  const high = (run) => (run.y.length ? Math.max(...run.y) : null);
  document.getElementById("table").replaceChildren(sortableTable([
    { label: "run", sort: (r) => r.id, cell: (r) => link(`/runs/${r.id}`, r.id), num: true },
    { label: "experiment", sort: (r) => r.experiment, cell: (r) => link(`/experiments/${r.experiment_id}`, r.experiment) },
    { label: "status", sort: (r) => r.status, cell: (r) => statusCell(r.status) },
    { label: "min", sort: low, cell: (r) => fmtValue(low(r)), num: true },
    { label: "max", sort: high, cell: (r) => fmtValue(high(r)), num: true },
    { label: "last", sort: last, cell: (r) => fmtValue(last(r)), num: true },
    { label: "points", sort: (r) => r.total, cell: pointsNote },
  ], data.runs));
  rendered();
}

const PAGES = {
  experiments: experimentsPage, experiment: experimentPage, run: runPage, compare: comparePage,
};

const page = PAGES[document.body.dataset.page];
if (page) {
  page(document.body.dataset.api).catch((error) => {
    showError(document.querySelector("main .table-wrap, main section, main .chart") ||
      document.querySelector("main"), error);
  });
}
