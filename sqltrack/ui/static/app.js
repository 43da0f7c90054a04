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
  // Same-origin fetches carry Sec-Fetch-Site: same-origin, which the server requires
  // of its API (with the page's token cookie); credentials stay on this origin.
  const response = await fetch(url, { headers: { accept: "application/json" },
                                      credentials: "same-origin" });
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
    let script = document.getElementById("plotly-js");
    if (!script) { // a page without charts of its own (the runs table's plots)
      script = el("script", { id: "plotly-js", src: "/static/plotly.min.js", async: "" });
      document.head.append(script);
    }
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
// columns: [{key, label, sort: row => value, cell: row => Node|string, num: bool}]
// options.sort = {key, order: "ascending"|"descending"}; options.onSort(key, order)
const isMissing = (value) => value === null || value === undefined || value === "";

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function sortableTable(columns, rows, options = {}) {
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
  const sortBy = (column, th, ascending) => {
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
  };
  const headers = columns.map((column) => {
    const button = el("button", { type: "button", text: column.label });
    const th = el("th", { scope: "col", "aria-sort": "none" }, [button]);
    if (column.key) th.dataset.key = column.key;
    if (column.num) th.className = "num";
    if (!column.sort) { button.disabled = true; return th; }
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      sortBy(column, th, ascending);
      if (options.onSort) options.onSort(column.key, ascending ? "ascending" : "descending");
    });
    return th;
  });
  const thead = el("thead", {}, [el("tr", {}, headers)]);
  const wanted = options.sort ? columns.findIndex((c) => c.key && c.key === options.sort.key) : -1;
  if (wanted >= 0 && columns[wanted].sort) {
    sortBy(columns[wanted], headers[wanted], options.sort.order !== "descending");
  }
  return el("table", { class: "sortable" }, [thead, tbody]);
}

// -- charts --------------------------------------------------------------------
// The mode bar stands vertical at the right edge, titles start at the left: it never
// covers a title. Charts follow their box's width (responsive).
const PLOT_CONFIG = { responsive: true, displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines",
    "hoverClosestCartesian", "hoverCompareCartesian"] };
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const AXIS_TITLES = { step: "step", progress: "progress", time: "wall time" };

// Chart colours from the page's CSS variables (light or dark, prefers-color-scheme).
function themeColors() {
  const css = getComputedStyle(document.documentElement);
  const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return { fg: read("--fg", "#1d232b"), bg: read("--bg", "#fff"), line: read("--line", "#dde2e8") };
}

function layout(title, xTitle, extra = {}) {
  const theme = themeColors();
  // automargin: long tick labels widen the margin instead of being clipped.
  const axis = { gridcolor: theme.line, zerolinecolor: theme.line, linecolor: theme.line,
    automargin: true };
  return {
    title: { text: plotlyText(title), font: { size: 14 }, x: 0, xref: "paper", xanchor: "left" },
    margin: { l: 56, r: 40, t: 40, b: 40 },
    modebar: { orientation: "v" },
    xaxis: { title: { text: plotlyText(xTitle) }, ...axis },
    yaxis: { ...axis },
    font: { family: "system-ui, sans-serif", size: 12, color: theme.fg },
    paper_bgcolor: theme.bg, plot_bgcolor: theme.bg,
    ...extra,
    ...(extra.yaxis ? { yaxis: { ...axis, ...extra.yaxis } } : {}),
    ...(extra.xaxis ? { xaxis: { ...axis, ...extra.xaxis } } : {}),
  };
}

// Exponential moving average, debiased at the start (as TensorBoard draws it).
function ema(values, weight) {
  if (!weight) return values;
  let last = 0;
  return values.map((value, index) => {
    last = last * weight + (1 - weight) * value;
    return last / (1 - weight ** (index + 1));
  });
}

function pointsNote(curve) {
  const shown = curve.points.toLocaleString();
  const total = (curve.total - curve.non_finite).toLocaleString();
  let text = curve.downsampled ? `${shown} of ${total} points (min and max of each bucket kept)`
    : `${shown} points`;
  if (curve.non_finite) text += `, ${curve.non_finite} NaN/inf left out`;
  return text;
}

// The chart controls (x axis, log scale, smoothing) shared by every chart of a page.
// metricAxes: [name, label] of metrics that may be the x axis ("metric:<name>").
function chartControls(axes, onChange, metricAxes = [], onReset = null) {
  const state = { x: axes[0], log: false, smoothing: 0, xRange: null };
  const params = new URLSearchParams(location.search);
  const choices = [...axes, ...metricAxes.map(([name]) => `metric:${name}`)];
  if (choices.includes(params.get("x"))) state.x = params.get("x");
  state.log = params.get("log") === "1";
  const wanted = Number(params.get("smoothing"));
  if (wanted >= 0 && wanted < 1) state.smoothing = wanted;
  const remember = () => {
    const url = new URL(location.href);
    url.searchParams.set("x", state.x);
    url.searchParams.set("log", state.log ? "1" : "0");
    url.searchParams.set("smoothing", String(state.smoothing));
    history.replaceState(null, "", url);
  };
  const option = (value, text) => {
    const o = el("option", { text });
    o.value = value;
    o.selected = value === state.x;
    return o;
  };
  const axis = el("select", { id: "x-axis", "aria-label": "x axis" },
    axes.map((name) => option(name, AXIS_TITLES[name] || name)));
  if (metricAxes.length) {
    axis.append(el("optgroup", { label: "metric" },
      metricAxes.map(([name, label]) => option(`metric:${name}`, label))));
  }
  axis.addEventListener("change", () => {
    state.x = axis.value;
    state.xRange = null; // a range of another axis means nothing here
    remember();
    onChange();
  });
  const log = el("input", { type: "checkbox", id: "log-scale" });
  log.checked = state.log;
  log.addEventListener("change", () => { state.log = log.checked; remember(); onChange(); });
  const slider = el("input", { type: "range", id: "smoothing", min: "0", max: "0.99",
    step: "0.01", "aria-label": "smoothing" });
  slider.value = String(state.smoothing);
  const shown = el("output", { id: "smoothing-value", text: state.smoothing.toFixed(2) });
  slider.addEventListener("input", () => {
    state.smoothing = Number(slider.value);
    shown.textContent = state.smoothing.toFixed(2);
    remember();
    onChange();
  });
  const bar = el("div", { class: "controls", id: "chart-controls" }, [
    el("label", {}, ["x axis ", axis]),
    el("label", {}, [log, " log scale"]),
    el("label", {}, ["smoothing ", slider, " ", shown]),
  ]);
  if (onReset) {
    const reset = el("button", { type: "button", id: "x-reset", text: "reset zoom",
      title: "every chart back to its whole x range" });
    reset.addEventListener("click", onReset);
    bar.append(reset);
  }
  return { bar, state };
}

// Traces of one series: the raw line (faint once smoothed) and its EMA.
function seriesTraces(series, state, color, name, showLegend, runs = "") {
  const x = xValues(series, state);
  const raw = {
    x, y: series.y, type: "scatter", mode: "lines", name: plotlyText(name),
    line: { color, width: 1.5 }, legendgroup: name, showlegend: showLegend && !state.smoothing,
    hovertemplate: `${hoverName(name, runs)}: %{y}<extra></extra>`,
  };
  if (!state.smoothing) return [raw];
  raw.opacity = 0.25;
  raw.hoverinfo = "skip";
  delete raw.hovertemplate;
  return [raw, {
    x, y: ema(series.y, state.smoothing), type: "scatter", mode: "lines",
    name: plotlyText(name), line: { color, width: 2 }, legendgroup: name,
    showlegend: showLegend, hovertemplate: `${hoverName(name, runs)}: %{y}<extra></extra>`,
  }];
}

// A group's band (min-max or mean ± std) under its mean line, in the group's colour.
function bandTraces(s, state) {
  const x = xValues(s.series, state);
  const edge = { x, type: "scatter", mode: "lines", line: { width: 0, color: s.color },
    hoverinfo: "skip", showlegend: false, legendgroup: s.label };
  return [{ ...edge, y: s.band.low },
    { ...edge, y: s.band.high, fill: "tonexty", fillcolor: translucent(s.color, 0.2) }];
}

// "#1f77b4" as rgba() with the given alpha (a band lets the lines under it show).
function translucent(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

// The name in a hover label: a group's names its runs.
function hoverName(name, runs) {
  return runs ? `${plotlyText(name)} [${plotlyText(runs)}]` : plotlyText(name);
}

// A series' x values on the chosen axis: step, progress, time, or a metric's value at
// each point's step (``state.xSource(name)``: that metric's series; linear between its
// points, none outside them).
function xValues(series, state) {
  if (!state.x.startsWith("metric:")) return series.x[state.x] || series.x.step;
  const source = state.xSource ? state.xSource(state.x.slice(7)) : null;
  if (!source) return series.x.step.map(() => null);
  const pairs = source.x.step.map((step, i) => [step, source.y[i]])
    .filter(([step, y]) => typeof step === "number" && typeof y === "number")
    .sort((a, b) => a[0] - b[0]);
  return series.x.step.map((step) => interpolate(pairs, step));
}

function interpolate(pairs, at) {
  let low = 0;
  let high = pairs.length - 1;
  if (high < 0 || at < pairs[0][0] || at > pairs[high][0]) return null;
  while (high - low > 1) {
    const middle = (low + high) >> 1;
    if (pairs[middle][0] <= at) low = middle; else high = middle;
  }
  const [x0, y0] = pairs[low];
  const [x1, y1] = pairs[high];
  if (x0 === at) return y0;
  if (x1 === at || x1 === x0) return y1;
  return y0 + (y1 - y0) * (at - x0) / (x1 - x0);
}

// The x axis' title: a metric's label for a metric axis.
function xTitle(state) {
  if (!state.x.startsWith("metric:")) return AXIS_TITLES[state.x] || state.x;
  return state.xLabel ? state.xLabel(state.x.slice(7)) : state.x.slice(7);
}

// A series kept in the page: its points on every axis, so a new point is appended.
function newSeries(curve) {
  return { x: { step: [...curve.step], progress: [...curve.progress], time: [...(curve.time || [])] },
    y: [...curve.y], curve };
}

function appendSeries(series, curve) {
  series.x.step.push(...curve.step);
  series.x.progress.push(...curve.progress);
  if (curve.time) series.x.time.push(...curve.time);
  series.y.push(...curve.y);
  series.curve = { ...series.curve, points: series.y.length,
    total: series.curve.total + curve.total, non_finite: series.curve.non_finite + curve.non_finite };
}

// One figure per metric: { name -> {plot, caption, series: [{key, label, series}]} }
function drawFigure(Plotly, figure, title, state) {
  const traces = figure.series.flatMap((s, index) => [
    ...(s.band ? bandTraces(s, state) : []),
    ...seriesTraces(s.series, state, s.color || COLORS[index % COLORS.length], s.label,
      figure.series.length > 1, s.runs)]);
  const extra = {
    yaxis: { type: state.log ? "log" : "linear" },
    xaxis: { title: { text: plotlyText(xTitle(state)) }, type: state.x === "time" ? "date" : "linear",
      // one x range for every chart (a zoom in one is applied to all; see CurveCharts)
      ...(state.xRange ? { range: [...state.xRange], autorange: false } : { autorange: true }) },
    hovermode: "x",
    showlegend: figure.series.length > 1,
    // A compact legend: one row under the chart, never beside it.
    legend: { orientation: "h", x: 0, y: -0.2, yanchor: "top", font: { size: 11 } },
    // The arrays grow in place when a live page appends: a new revision makes plotly
    // read them again, so the autoranged axes follow the new points.
    datarevision: figure.series.reduce((n, s) => n + s.series.y.length, 0),
  };
  return Plotly.react(figure.plot, traces, layout(title, xTitle(state), extra), PLOT_CONFIG);
}

function pollSeconds() {
  const wanted = Number(new URLSearchParams(location.search).get("poll"));
  return wanted >= 0.2 ? wanted : 3;
}

function liveNote(text, live) {
  let note = document.getElementById("live");
  if (!note) {
    note = el("p", { id: "live", class: "note live" });
    document.querySelector("main h1").after(note);
  }
  note.textContent = text;
  note.dataset.state = live ? "polling" : "ended";
  note.hidden = false;
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

const MAX_COMPARE = 20;
const FILTER_EXAMPLES = {
  postgres: "args->>'lr' = '0.1' AND status = 'COMPLETED'",
  sqlite: "json_extract(args, '$.lr') = 0.1 AND status = 'COMPLETED'",
};

function runLabel(run) {
  return run.name ? `${run.name} (${run.id})` : `run ${run.id}`;
}

// The filter box and the column picker, added to the page's status/tag form.
function tableForm(data) {
  const form = document.querySelector("form.filters");
  const params = new URLSearchParams(location.search);
  const chosen = new Set(data.columns.map((c) => c.key));
  const filter = el("textarea", { name: "filter", id: "filter", rows: "2", spellcheck: "false",
    "aria-label": "SQL filter", placeholder: FILTER_EXAMPLES[data.engine] || "" });
  filter.value = data.filters.filter || "";
  const box = (key, text) => {
    const input = el("input", { type: "checkbox", name: "col", value: key });
    input.checked = chosen.has(key);
    return el("label", { class: "pick" }, [input, " ", text]);
  };
  const groups = [
    ["run", [box("tags", "tags"), box("comment", "comment")]],
    ["args", data.available.args.map((k) => box(`args.${k}`, k))],
    ["extras", data.available.extras.map((k) => box(`extras.${k}`, k))],
    ["summary", (data.available.summary || []).map((k) => box(`summary.${k}`, k))],
    ...["last", "min", "max"].map((agg) => [`metric ${agg}`, data.available.metrics.map(
      (m) => box(`${agg}.${m}`, data.metric_names[m] || m))]),
  ].filter(([, boxes]) => boxes.length);
  const picker = el("details", { id: "columns", class: "columns-picker" }, [
    el("summary", { text: `columns (${data.columns.length} shown)` }),
    ...groups.map(([title, boxes]) => el("fieldset", {}, [el("legend", { text: title }), ...boxes])),
  ]);
  for (const name of ["sort", "order"]) {
    if (params.get(name)) form.append(el("input", { type: "hidden", name, value: params.get(name) }));
  }
  const button = form.querySelector("button[type=submit]");
  button.textContent = "apply";
  // Search without SQL: words in the name, tags or status; name=, tag=, status=, arg=value.
  const search = el("input", { type: "search", name: "search", id: "run-search",
    "aria-label": "search runs", placeholder: "adam tag=best status=completed lr=0.1" });
  search.value = data.filters.search || "";
  const groupBy = el("select", { name: "group", id: "group-by", "aria-label": "group runs by" });
  const choice = (value, text) => {
    const option = el("option", { text });
    option.value = value;
    option.selected = value === (data.group || "");
    return option;
  };
  groupBy.append(choice("", "none"), ...data.available.args.map((k) => choice(`args.${k}`, `args.${k}`)),
    choice("group", "group"), choice("tags", "tags"), choice("status", "status"));
  if (data.group && groupBy.value !== data.group) groupBy.append(choice(data.group, data.group));
  form.append(el("label", { class: "filter-group" }, ["group by ", groupBy]), " ");
  form.prepend(el("label", { class: "filter-search" }, ["search ", search]),
    el("label", { class: "filter-sql" }, ["SQL filter ", filter]));
  form.append(picker);
  // Enter applies the filter (Shift+Enter: a new line).
  filter.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
}

// A refused SQL filter is left out of the page's requests (it stays in the box).
let filterRefused = false;

function tableApi() {
  const match = location.pathname.match(/^\/experiments\/(\d+)/);
  const params = new URLSearchParams(location.search);
  if (filterRefused) params.delete("filter");
  return { id: match[1], url: `/api/experiments/${match[1]}/table?${params}` };
}

// One line under the filters: what was refused and how a filter is written.
function filterProblem(error, engine) {
  const example = FILTER_EXAMPLES[engine] || FILTER_EXAMPLES.sqlite;
  const line = el("p", { id: "filter-problem", class: "filter-problem" }, [
    el("span", { class: "error", id: "filter-error", text: error.message }), " ",
    el("span", { class: "note", id: "filter-hint",
      text: `(not applied; a filter is a boolean expression over the runs' columns, such as ` +
        `${example}, or use the search box: words, tag=, status=, arg=value)` })]);
  document.getElementById("table").before(line);
}

async function experimentPage() {
  const target = document.getElementById("table");
  let { id, url } = tableApi();
  let data;
  let refused = null;
  try {
    data = await getJSON(url);
  } catch (error) {
    // A refused filter: the page without it (table, columns, plots), and one line why.
    if (!new URLSearchParams(location.search).get("filter")) throw error;
    refused = error;
    filterRefused = true;
    ({ id, url } = tableApi());
    data = await getJSON(url);
    data.filters.filter = new URLSearchParams(location.search).get("filter");
  }
  if (refused) filterProblem(refused, data.engine);
  tableForm(data);
  const filters = [data.filters.status, ...data.filters.tags, data.filters.search,
    refused ? "" : data.filters.filter].filter(Boolean);
  document.getElementById("meta").textContent = `${data.total} run` +
    `${data.total === 1 ? "" : "s"}${filters.length ? ` (filtered: ${filters.join(", ")})` : ""}` +
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
  const hasNames = data.runs.some((r) => r.name);
  const columns = [
    { label: "", cell: (r) => el("span", { "data-run-color": r.id }, [select(r), " ", swatch(r.color)]) },
    { key: "id", label: "run", sort: (r) => r.id, cell: (r) => link(`/runs/${r.id}`, r.id), num: true },
    ...(hasNames ? [{ key: "name", label: "name", sort: (r) => r.name, cell: (r) => r.name ?? "" }] : []),
    { key: "status", label: "status", sort: (r) => r.status,
      cell: (r) => el("span", {}, runStatus(r.status, r.idle_seconds, null)) },
    { key: "started", label: "started", sort: (r) => r.started, cell: (r) => fmtTime(r.started) },
    { key: "updated", label: "updated", sort: (r) => r.updated, cell: (r) => fmtTime(r.updated) },
    { key: "duration", label: "duration", sort: (r) => r.duration_seconds,
      cell: (r) => fmtDuration(r.duration_seconds), num: true },
    ...data.columns.map((column, index) => ({
      key: column.key, label: column.label, num: column.numeric,
      sort: (r) => r.values[index], cell: (r) => fmtValue(r.values[index]),
    })),
  ];
  const params = new URLSearchParams(location.search);
  // The server sorts: a table of one page is sorted here alike; with more pages (or
  // groups) the page asks the server for the first page in the new order.
  const remember = (key, order) => {
    const address = new URL(location.href);
    address.searchParams.set("sort", key);
    address.searchParams.set("order", order);
    if (data.pages > 1 || data.groups) {
      address.searchParams.delete("page");
      location.assign(address);
      return;
    }
    history.replaceState(null, "", address);
    for (const name of ["sort", "order"]) {
      const input = document.querySelector(`form.filters input[name=${name}]`) ||
        document.querySelector("form.filters").appendChild(el("input", { type: "hidden", name }));
      input.value = name === "sort" ? key : order;
    }
  };
  const table = sortableTable(columns, data.runs, {
    sort: params.get("sort") && !data.groups ? { key: params.get("sort"), order: params.get("order") } : null,
    onSort: remember,
  });
  if (data.groups) groupRows(table, data, columns.length);
  target.replaceChildren(table);
  pager(target, data);
  setUpCompare(data, selected);
  rendered(); // the table is there; the hyper-parameter plots follow (data-drawn)
  await hyperParameters(data, id).catch((error) => {
    document.querySelector("main").append(el("p", { class: "error", text: error.message }));
  });
}

// Collapsible groups in the runs table: a header row per group with its count (over
// every page); its runs (on this page) named on hover.
function groupRows(table, data, width) {
  const counts = new Map(data.groups.map((g) => [g.key, g.count]));
  const rows = [...table.tBodies[0].rows];
  let current = null;
  rows.forEach((tr, index) => {
    const run = data.runs[index];
    tr.dataset.group = run.group;
    if (run.group === current) return;
    current = run.group;
    const members = data.runs.filter((r) => r.group === run.group);
    const toggle = el("button", { type: "button", class: "group-toggle", "aria-expanded": "true",
      title: members.map(runLabel).join(", "),
      text: `${data.group} = ${run.group} (${counts.get(run.group)})` });
    const header = el("tr", { class: "group-row" }, [el("td", { colspan: String(width) }, [toggle])]);
    header.dataset.groupHeader = run.group;
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      for (const row of rows) if (row.dataset.group === run.group) row.hidden = !open;
    });
    tr.before(header);
  });
}

// Pages of the runs table: which page of how many, previous and next.
function pager(target, data) {
  if (data.pages <= 1) return;
  const go = (page) => {
    const address = new URL(location.href);
    address.searchParams.set("page", String(page));
    address.searchParams.delete("token");
    return address.pathname + address.search;
  };
  const nav = el("nav", { id: "pager", class: "pager" }, [
    data.page > 1 ? link(go(data.page - 1), "‹ previous") : el("span", { text: "" }), " ",
    el("span", { id: "pager-text", text: `page ${data.page} of ${data.pages} (${data.total} runs)` }), " ",
    data.page < data.pages ? link(go(data.page + 1), "next ›") : el("span", { text: "" })]);
  target.append(nav);
}

function setUpCompare(data, selected) {
  const form = document.getElementById("compare");
  if (!data.plottable.length) return;
  const metric = form.elements.metric;
  const every = el("option", { text: "every metric" });
  every.value = "";
  metric.replaceChildren(every, ...data.plottable.map((name) => {
    const option = el("option", { text: data.metric_names[name] || name });
    option.value = name;
    return option;
  }));
  metric.name = "metrics";
  const note = el("span", { class: "note", id: "compare-note" });
  form.append(note);
  form.addEventListener("submit", (event) => {
    const ids = selected.size ? [...selected] : data.runs.slice(0, MAX_COMPARE).map((r) => r.id);
    if (ids.length > MAX_COMPARE) {
      event.preventDefault();
      note.textContent = `select at most ${MAX_COMPARE} runs`;
      return;
    }
    form.elements.runs.value = ids.join(",");
    if (!metric.value) metric.disabled = true; // every metric: no parameter
  });
  form.hidden = false;
}

// -- hyper-parameters ------------------------------------------------------------
function dimension(label, values) {
  const present = values.filter((v) => !isMissing(v));
  const numeric = present.every((v) => typeof v === "number" || typeof v === "boolean");
  if (numeric && present.length === values.length) {
    return { label, values: values.map(Number) };
  }
  const texts = values.map((v) => (isMissing(v) ? "(none)" : fmtValue(v)));
  const levels = [...new Set(texts)].sort((a, b) => compareValues(a, b));
  return {
    label, values: texts.map((t) => levels.indexOf(t)), ticktext: levels,
  };
}

// Parallel coordinates in SVG (no WebGL needed): one vertical axis per dimension,
// one line per run coloured by the metric (the last axis). Text only as text nodes.
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  const at = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(at), VIRIDIS.length - 2);
  const f = at - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
}

function parallelCoordinates(dims, colour, labels) {
  const width = 1200;
  const height = 380;
  const top = 56;
  const bottom = 30;
  const left = 110;
  const step = dims.length > 1 ? (width - 2 * left) / (dims.length - 1) : 0;
  const scales = dims.map((d) => {
    const lo = d.ticktext ? 0 : Math.min(...d.values);
    const hi = d.ticktext ? Math.max(d.ticktext.length - 1, 1) : Math.max(...d.values);
    // Values spanning decades (learning rates) on a log axis.
    const log = !d.ticktext && lo > 0 && hi / lo >= 100;
    const f = log ? Math.log10 : (v) => v;
    const span = f(hi) - f(lo) || 1;
    return (v) => height - bottom - ((f(v) - f(lo)) / span) * (height - top - bottom);
  });
  const low = Math.min(...colour);
  const high = Math.max(...colour);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "parcoords",
    role: "img", "aria-label": "parallel coordinates" });
  const lines = svg("g", { class: "lines" });
  colour.forEach((c, run) => {
    const points = dims.map((d, i) => `${left + i * step},${scales[i](d.values[run]).toFixed(1)}`);
    const line = svg("polyline", { points: points.join(" "), fill: "none", "stroke-width": 2,
      stroke: viridis(high > low ? (c - low) / (high - low) : 0.5), opacity: 0.85 },
    [svg("title", {}, [`${labels[run]}: ${fmtValue(c)}`])]);
    lines.append(line);
  });
  root.append(lines);
  dims.forEach((d, i) => {
    const x = left + i * step;
    const axis = svg("g", { class: "axis" }, [
      svg("line", { x1: x, x2: x, y1: top, y2: height - bottom, stroke: "#444" }),
      svg("text", { x, y: top - 22, "text-anchor": "middle", class: "axis-title" },
        [d.label.length > 30 ? `${d.label.slice(0, 29)}…` : d.label]),
    ]);
    const ticks = d.ticktext ? d.ticktext.map((t, k) => [k, t])
      : [[Math.min(...d.values), fmtValue(Math.min(...d.values))],
        [Math.max(...d.values), fmtValue(Math.max(...d.values))]];
    for (const [value, text] of ticks) {
      axis.append(svg("text", { x: x - 6, y: scales[i](value) + 4, "text-anchor": "end",
        class: "tick" }, [String(text).slice(0, 24)]));
    }
    root.append(axis);
  });
  return root;
}

async function hyperParameters(data, experimentId) {
  if (!data.available.args.length || !data.plottable.length) return;
  const section = el("section", { id: "hparams" }, [el("h2", { text: "Hyper-parameters" })]);
  document.querySelector("main").append(section);
  const option = (value, text) => { const o = el("option", { text }); o.value = value; return o; };
  const metric = el("select", { id: "hp-metric", "aria-label": "metric" },
    data.plottable.map((m) => option(m, data.metric_names[m] || m)));
  const agg = el("select", { id: "hp-agg", "aria-label": "summary" },
    ["last", "min", "max"].map((a) => option(a, a)));
  const arg = el("select", { id: "hp-arg", "aria-label": "argument" },
    data.available.args.map((a) => option(a, a)));
  const wanted = new URLSearchParams(location.search);
  for (const [control, name] of [[metric, "hp_metric"], [agg, "hp_agg"], [arg, "hp_arg"]]) {
    const value = wanted.get(name);
    if (value && [...control.options].some((o) => o.value === value)) control.value = value;
    control.addEventListener("change", () => {
      const address = new URL(location.href);
      address.searchParams.set(name, control.value);
      history.replaceState(null, "", address);
    });
  }
  const parcoords = el("div", { id: "parcoords", class: "parcoords-wrap" });
  const scatter = el("div", { id: "scatter", class: "chart" });
  const note = el("p", { class: "note", id: "hp-note" });
  section.append(el("div", { class: "controls" }, [
    el("label", {}, ["metric ", metric]), el("label", {}, [" ", agg]),
    el("label", {}, ["scatter: argument ", arg]),
  ]), note, parcoords, scatter);
  const args = data.available.args.slice(0, 39);
  const draw = async () => {
    const params = new URLSearchParams(tableApi().url.split("?")[1]);
    params.delete("col");
    // Every run of the filter (up to a page of 1,000), whatever page the table shows.
    for (const name of ["sort", "order", "group", "page"]) params.delete(name);
    params.set("per_page", "1000");
    for (const a of args) params.append("col", `args.${a}`);
    params.append("col", `${agg.value}.${metric.value}`);
    const table = await getJSON(`/api/experiments/${experimentId}/table?${params}`);
    const last = table.columns.length - 1;
    const runs = table.runs.filter((r) => typeof r.values[last] === "number" ||
      typeof r.values[last] === "boolean");
    const metricLabel = table.columns[last].label;
    note.textContent = `${runs.length} of ${table.runs.length} runs have a ${metricLabel}`;
    const dims = args.map((a, i) => dimension(a, runs.map((r) => r.values[i])))
      .filter((d) => d.values.length && !d.values.every((v) => v === d.values[0] && d.ticktext));
    const ys = runs.map((r) => Number(r.values[last]));
    dims.push({ label: metricLabel, values: ys });
    parcoords.replaceChildren(parallelCoordinates(dims, ys, runs.map(runLabel)));
    const at = args.indexOf(arg.value);
    const Plotly = await plotlyReady();
    await Plotly.react(scatter, [{
      x: runs.map((r) => (typeof r.values[at] === "object" && r.values[at] !== null
        ? JSON.stringify(r.values[at]) : r.values[at])),
      y: ys, type: "scatter", mode: "markers", text: runs.map((r) => plotlyText(runLabel(r))),
      hovertemplate: "%{text}: %{x} → %{y}<extra></extra>", marker: { size: 9, color: COLORS[0] },
    }], layout(`${metricLabel} against ${arg.value}`, arg.value), PLOT_CONFIG);
    section.dataset.drawn = String(runs.length);
  };
  for (const control of [metric, agg, arg]) {
    control.addEventListener("change", () => draw().catch((error) => showError(note, error)));
  }
  await draw();
}

function details(run) {
  const rows = [
    ["experiment", link(`/experiments/${run.experiment_id}`, run.experiment)],
    ["status", el("span", { id: "run-status" }, runStatus(run.status, run.idle_seconds))],
    ["created", fmtTime(run.created)], ["started", fmtTime(run.started)],
    ["updated", fmtTime(run.updated)], ["duration", fmtDuration(run.duration_seconds)],
    ["comment", run.comment ?? ""], ["tags", run.tags.join(", ")],
    ["args", keyValueTable("args-table", "args-table-filter", "args", flatItems(run.args))],
    ["extras", keyValueTable("extras-table", "extras-table-filter", "extras",
      flatItems(extrasShown(run)))],
    ["env keys", run.env_keys.join(", ")],
    ["links", el("span", {}, run.links.flatMap((l) => {
      const other = l.from === run.id ? l.to : l.from;
      const arrow = l.from === run.id ? `${l.kind} → ` : `← ${l.kind} `;
      return [arrow, link(`/runs/${other}`, `run ${other}`), " "];
    }))],
  ];
  return el("dl", { class: "details" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, [v])]));
}

// Nested objects as "a.b.c" keys (lists and empty objects stay values, shown as JSON).
function flatItems(value, prefix = "", out = []) {
  if (value && typeof value === "object" && !Array.isArray(value) &&
      (!prefix || Object.keys(value).length)) {
    for (const [key, inner] of Object.entries(value)) {
      flatItems(inner, prefix ? `${prefix}.${key}` : key, out);
    }
  } else if (prefix) {
    out.push([prefix, value]);
  }
  return out;
}

// The extras the details show: the summary and the media have sections of their own.
function extrasShown(run) {
  const extras = { ...(run.extras && typeof run.extras === "object" ? run.extras : {}) };
  if (Object.keys(run.summary || {}).length) delete extras.summary;
  if (runMedia(run)) delete extras.media;
  return extras;
}

// The run's media references (extras.media, written by the wandb-style module: per
// name, a list of {step, type, path, caption, size}), or null.
function runMedia(run) {
  const media = run.extras && typeof run.extras === "object" ? run.extras.media : null;
  return media && typeof media === "object" && !Array.isArray(media) &&
    Object.keys(media).length ? media : null;
}

const MEDIA_SHOWN = 24; // the last files of each name
const MEDIA_TAGS = { png: "img", jpg: "img", jpeg: "img", gif: "img", webp: "img",
  wav: "audio", mp3: "audio", ogg: "audio", mp4: "video", webm: "video" };
let mediaDrawn = null; // the references last drawn (a live page draws them once)

// Per name, its last files: images, audio and video from the server's media route
// (which serves only such files of the run's own media folder), anything else (HTML,
// 3D objects, plots) by file name; captions and names as text.
function showMedia(run) {
  const media = runMedia(run);
  const key = JSON.stringify(media);
  if (key === mediaDrawn) return;
  mediaDrawn = key;
  const parts = [];
  for (const [name, entries] of Object.entries(media || {}).sort(([a], [b]) => compareValues(a, b))) {
    if (!Array.isArray(entries)) continue;
    const items = entries.filter((m) => m && typeof m === "object").slice(-MEDIA_SHOWN);
    parts.push(el("h3", { text: name }));
    parts.push(el("div", { class: "media" }, items.map((m) => mediaItem(run.id, m))));
  }
  document.getElementById("media").replaceChildren(...parts);
  document.getElementById("media-section").hidden = !parts.length;
}

function mediaItem(runId, m) {
  const file = String(m.path ?? "").split(/[\\/]/).pop();
  const tag = MEDIA_TAGS[file.includes(".") ? file.split(".").pop().toLowerCase() : ""];
  const src = `/media/${runId}/${encodeURIComponent(file)}`;
  const shown = tag === "img" ? el("img", { src, alt: String(m.caption ?? file), loading: "lazy" })
    : tag ? el(tag, { src, controls: "" }) : el("span", { class: "note", text: file });
  const caption = `step ${fmtValue(m.step)}` + (m.caption ? ` · ${m.caption}` : "");
  return el("figure", { class: "media-item" }, [shown, el("figcaption", { text: caption })]);
}

// Filter texts of the key/value tables, kept when a live page draws them again.
const KV_FILTERS = new Map();

// A key/value table in key order, with a box that keeps the rows whose key or value
// holds its text (any case). Keys and values are text (textContent), never markup.
function keyValueTable(tableId, filterId, what, items) {
  if (!items.length) return el("span", { class: "note", text: "none" });
  const table = sortableTable([
    { label: "key", sort: ([k]) => k, cell: ([k]) => k },
    { label: "value", sort: ([, v]) => v, cell: ([, v]) => fmtValue(v) },
  ], [...items].sort(([a], [b]) => compareValues(a, b)));
  table.id = tableId;
  const box = el("input", { type: "search", id: filterId, class: "kv-filter",
    placeholder: `filter ${what}`, "aria-label": `filter ${what}` });
  box.value = KV_FILTERS.get(filterId) || "";
  const apply = () => {
    KV_FILTERS.set(filterId, box.value);
    const wanted = box.value.toLowerCase();
    for (const row of table.tBodies[0].rows) {
      row.hidden = Boolean(wanted) &&
        ![...row.cells].some((cell) => cell.textContent.toLowerCase().includes(wanted));
    }
  };
  box.addEventListener("input", apply);
  apply();
  return el("div", { class: "kv" }, [box, table]);
}

// The run's own summary (wandb's run.summary, kept in extras.summary): key and value.
function runSummary(items) {
  document.getElementById("run-summary-section").hidden = false;
  return keyValueTable("run-summary-table", "run-summary-filter", "summary", items);
}

function summaryTable(run, labels) {
  if (!run.metrics.length) return el("p", { class: "note", text: "No metrics yet." });
  return sortableTable([
    { label: "metric", sort: (m) => labels[m.metric] || m.metric, cell: (m) => labels[m.metric] || m.metric },
    { label: "count", sort: (m) => m.count, cell: (m) => m.count, num: true },
    { label: "min", sort: (m) => m.min, cell: (m) => fmtValue(m.min), num: true },
    { label: "max", sort: (m) => m.max, cell: (m) => fmtValue(m.max), num: true },
    { label: "last", sort: (m) => m.last, cell: (m) => fmtValue(m.last), num: true },
  ], run.metrics);
}

// Figures of curves, one per metric, each with one series per run; live updates append.
class CurveCharts {
  // placeOf(metric): the element a new metric's figure goes in (default: container).
  // metricAxes: [name, label] of the metrics that may be the x axis (the run page).
  // Every chart shows one x range: a zoom (or a double-click back) in one is applied to
  // all, and "reset zoom" gives each its whole range again.
  constructor(container, axes, labelOf, placeOf = null, metricAxes = []) {
    this.container = container;
    this.figures = new Map();
    this.labelOf = labelOf;
    this.placeOf = placeOf;
    this.controls = chartControls(axes, () => this.redraw(), metricAxes,
      () => this.shareRange(null));
    this.controls.state.xSource = (name) => this.figures.get(name)?.series[0]?.series;
    this.controls.state.xLabel = (name) => this.labelOf(name);
    this.sharing = false;
    container.before(this.controls.bar);
  }

  // Apply an x range (null: autorange) to every chart, and keep it for later redraws.
  async shareRange(range, from = null) {
    this.controls.state.xRange = range;
    if (!window.Plotly) return;
    this.sharing = true;
    try {
      const update = range ? { "xaxis.range": [...range], "xaxis.autorange": false }
        : { "xaxis.autorange": true };
      await Promise.all([...this.figures.values()]
        .filter((f) => f.plot !== from && f.plot.data)
        .map((f) => window.Plotly.relayout(f.plot, update)));
      if (from && !range) await window.Plotly.relayout(from, update);
    } finally {
      this.sharing = false;
    }
    document.body.dataset.xRange = range ? range.join(",") : "auto";
  }

  // Follow a chart's zoom (plotly_relayout) once it is drawn.
  follow(plot) {
    if (plot.dataset.follows) return;
    plot.dataset.follows = "1";
    plot.on("plotly_relayout", (event) => {
      if (this.sharing) return;
      if (event["xaxis.autorange"]) { this.shareRange(null, plot); return; }
      const range = event["xaxis.range"] ||
        (event["xaxis.range[0]"] !== undefined ? [event["xaxis.range[0]"], event["xaxis.range[1]"]] : null);
      if (range) this.shareRange(range, plot);
    });
  }

  add(metric, key, label, curve, color = null, band = null) {
    let figure = this.figures.get(metric);
    if (!figure) {
      const plot = el("div", { class: "chart", "data-metric": metric });
      const caption = el("figcaption");
      const box = el("figure", { "data-label": this.labelOf(metric) }, [plot, caption]);
      (this.placeOf ? this.placeOf(metric) : this.container).append(box);
      figure = { plot, caption, box, series: [] };
      this.figures.set(metric, figure);
    }
    const existing = figure.series.find((s) => s.key === key);
    if (existing) appendSeries(existing.series, curve);
    else figure.series.push({ key, label, color, band, series: newSeries(curve) });
    const single = figure.series.length === 1 ? figure.series[0].series.curve : null;
    figure.caption.textContent = single ? pointsNote(single)
      : `${figure.series.length} ${band ? "groups" : "runs"}`;
  }

  async redraw(only = null) {
    const Plotly = await plotlyReady();
    const drawing = [];
    const fromMetric = this.controls.state.x.startsWith("metric:");
    for (const [metric, figure] of this.figures) {
      // on a metric's axis a chart's x values follow that metric: all are drawn again
      if (!only || only.has(metric) || fromMetric) {
        drawing.push(drawFigure(Plotly, figure, this.labelOf(metric), this.controls.state)
          .then(() => this.follow(figure.plot)));
      }
    }
    await Promise.all(drawing);
    document.body.dataset.redraws = String(Number(document.body.dataset.redraws || 0) + 1);
  }
}

// Sections of the run page by a metric's name prefix: "train/loss" is in "train", and so
// is the column form "train__loss" of a name logged without its extras' metric_names.
function metricPrefix(label) {
  const slash = label.indexOf("/");
  if (slash > 0) return label.slice(0, slash);
  const under = label.indexOf("__");
  return under > 0 ? label.slice(0, under) : "";
}

function resizeCharts(root) {
  if (!window.Plotly) return;
  for (const plot of root.querySelectorAll(".chart")) {
    if (plot.data && plot.offsetParent) window.Plotly.Plots.resize(plot);
  }
}

// Collapsible sections (<details>), one per prefix, in name order ("other" last).
class MetricSections {
  constructor(root) {
    this.root = root;
    this.sections = new Map();
  }

  place(label) {
    const prefix = metricPrefix(label);
    let section = this.sections.get(prefix);
    if (!section) {
      const grid = el("div", { class: "charts" });
      const count = el("span", { class: "note count" });
      const details = el("details", { class: "metric-section", "data-prefix": prefix, open: "" },
        [el("summary", {}, [el("span", { class: "prefix", text: prefix || "other" }), " ", count]),
          grid]);
      // a chart drawn while closed (or hidden) takes its size when shown
      details.addEventListener("toggle", () => { if (details.open) resizeCharts(details); });
      section = { details, grid, count, prefix };
      this.sections.set(prefix, section);
      const order = [...this.sections.values()].sort((a, b) =>
        (a.prefix === "") - (b.prefix === "") || compareValues(a.prefix, b.prefix));
      this.root.append(...order.map((s) => s.details));
    }
    return section.grid;
  }

  // Shows the figures whose label contains the search text (any case); counts them.
  filter(text) {
    const wanted = text.trim().toLowerCase();
    for (const section of this.sections.values()) {
      const boxes = [...section.grid.children];
      let shown = 0;
      for (const box of boxes) {
        box.hidden = Boolean(wanted) && !box.dataset.label.toLowerCase().includes(wanted);
        if (!box.hidden) shown += 1;
      }
      section.details.hidden = shown === 0;
      section.count.textContent = shown === boxes.length ? `(${boxes.length})`
        : `(${shown} of ${boxes.length})`;
    }
    resizeCharts(this.root);
  }
}

// Metrics with a single value (logged once: train_runtime, total_flos): a table, not a chart.
function singleValues(singles, labels, wanted = "") {
  const section = document.getElementById("values-section");
  const target = document.getElementById("values");
  const text = wanted.trim().toLowerCase();
  const rows = [...singles].map(([name, curve]) => ({ name, label: labels[name] || name,
    value: curve.y.length ? curve.y[0] : null, step: curve.step.length ? curve.step[0] : null }))
    .filter((r) => !text || r.label.toLowerCase().includes(text));
  section.hidden = !singles.size;
  target.replaceChildren(rows.length ? sortableTable([
    { key: "metric", label: "metric", sort: (r) => r.label, cell: (r) => r.label },
    { key: "value", label: "value", sort: (r) => r.value, cell: (r) => fmtValue(r.value), num: true },
    { key: "step", label: "step", sort: (r) => r.step, cell: (r) => r.step ?? "", num: true },
  ], rows, { sort: { key: "metric", order: "ascending" } })
    : el("p", { class: "note", text: "No value matches." }));
}

// A RUNNING run whose last update is older than ?stale= seconds (default 10 minutes)
// shows "not responding" beside its status; the stored status is left as it is.
const STALE_SECONDS = 600;
function staleSeconds() {
  const wanted = Number(new URLSearchParams(location.search).get("stale"));
  return wanted > 0 ? wanted : STALE_SECONDS;
}

function runStatus(status, idleSeconds, id = "not-responding") {
  const cell = [statusCell(status)];
  if (status === "RUNNING" && idleSeconds !== null && idleSeconds !== undefined &&
      idleSeconds > staleSeconds()) {
    const badge = el("span", { class: "status status-stale",
      title: `no update for ${fmtDuration(idleSeconds)}`, text: "not responding" });
    if (id) badge.id = id;
    cell.push(" ", badge);
  }
  return cell;
}

// A time as the extras hold it: ISO text shortened, anything else shown as it is.
function markTime(value) {
  return typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value) ? fmtTime(value)
    : fmtValue(value);
}

// The run's history: where it came from (a fork, a rewind's rows), its rewinds (at which
// step, when, rows moved, the run now holding them) and the runs forked from it.
function historyBlock(history) {
  const parts = [];
  const runLink = (id) => (id === null || id === undefined ? "" : link(`/runs/${Number(id)}`, `run ${id}`));
  const at = (mark) => [` at step ${fmtValue(mark.step)}`, mark.time ? ` (${markTime(mark.time)})` : ""];
  const origin = [];
  if (history.forked_from) {
    origin.push(el("li", { id: "forked-from" }, ["forked from ", runLink(history.forked_from.run),
      ...at(history.forked_from)]));
  }
  if (history.rewound_from) {
    origin.push(el("li", { id: "rewound-from" }, ["holds the rows past the rewind of ",
      runLink(history.rewound_from.run), ...at(history.rewound_from)]));
  }
  if (origin.length) parts.push(el("ul", {}, origin));
  if (history.rewinds.length) {
    parts.push(el("h3", { text: "Rewinds" }));
    const table = sortableTable([
      { key: "step", label: "to step", sort: (r) => r.step, cell: (r) => fmtValue(r.step), num: true },
      { key: "time", label: "when", sort: (r) => r.time,
        cell: (r) => markTime(r.time) },
      { key: "rows", label: "rows moved", sort: (r) => r.rows, cell: (r) => fmtValue(r.rows), num: true },
      { key: "run", label: "rows now in", sort: (r) => r.run, cell: (r) => runLink(r.run) },
    ], history.rewinds);
    table.id = "rewinds";
    parts.push(table);
  }
  if (history.forks.length) {
    parts.push(el("h3", { text: "Forks" }));
    parts.push(el("ul", { id: "forks" }, history.forks.map((f) =>
      el("li", {}, [runLink(f.run), ` from step ${fmtValue(f.step)}`]))));
  }
  if (history.more) parts.push(el("p", { class: "note", text: "(more runs than shown)" }));
  return parts;
}

function showRun(run, labels) {
  const history = run.history ? historyBlock(run.history) : [];
  document.getElementById("history").replaceChildren(...history);
  document.getElementById("history-section").hidden = !history.length;
  document.getElementById("details").replaceChildren(details(run));
  document.getElementById("summary").replaceChildren(summaryTable(run, labels));
  showMedia(run);
  const items = Object.entries(run.summary || {});
  if (items.length) document.getElementById("run-summary").replaceChildren(runSummary(items));
}

async function runPage(api) {
  const curvesUrl = `${api}/curves?max_points=2000`;
  const curves = getJSON(curvesUrl); // every request at once
  const system = getJSON(`${api}/system?max_points=2000`);
  curves.catch(() => {});
  system.catch(() => {}); // reported below, when awaited
  const run = await getJSON(api);
  document.getElementById("details").replaceChildren(details(run));
  const data = await curves;
  const labels = data.labels;
  showRun(run, labels);
  const root = document.getElementById("charts");
  const sections = new MetricSections(root);
  const labelOf = (m) => labels[m] || m;
  const plotted = Object.entries(data.metrics).filter(([, c]) => c.total > 1).map(([m]) => m);
  const isEpoch = (m) => /(^|\/|__)epoch$/.test(labelOf(m));
  const metricAxes = [...plotted.filter(isEpoch), ...plotted.filter((m) => !isEpoch(m))]
    .map((m) => [m, labelOf(m)]);
  const charts = new CurveCharts(root, data.axes, labelOf, (m) => sections.place(labelOf(m)),
    metricAxes);
  const singles = new Map();
  for (const [name, curve] of Object.entries(data.metrics)) {
    if (curve.total <= 1) singles.set(name, curve);
    else charts.add(name, "run", labelOf(name), curve);
  }
  const search = el("input", { type: "search", id: "metric-search", placeholder: "metric name",
    "aria-label": "search metrics" });
  search.value = new URLSearchParams(location.search).get("search") || "";
  const filter = () => {
    sections.filter(search.value);
    singleValues(singles, labels, search.value);
  };
  search.addEventListener("input", () => {
    const address = new URL(location.href);
    if (search.value) address.searchParams.set("search", search.value);
    else address.searchParams.delete("search");
    history.replaceState(null, "", address);
    filter();
  });
  charts.controls.bar.prepend(el("label", {}, ["search ", search]));
  filter();
  if (charts.figures.size) await charts.redraw();
  const machine = await systemCharts(api, await system);
  rendered();
  if (data.live) await followRun(api, data, { charts, machine, singles, labels, filter });
}

// System metrics: one chart per reading, a line per rank (and host); with several,
// a choice shows min / mean / max across ranks instead (computed by the server per
// bucket of time, read whole again at each poll). ?system=stats opens it so.
function rankLabel(line) {
  return line.host ? `rank ${line.rank} (${line.host})` : `rank ${line.rank}`;
}

async function systemCharts(api, data) {
  const names = Object.keys(data.metrics);
  if (!names.length) return null;
  const section = el("section", { id: "system" }, [el("h2", { text: "System" })]);
  const grid = el("div", { class: "charts" });
  const option = (value, text) => { const o = el("option", { text }); o.value = value; return o; };
  const view = el("select", { id: "system-view", "aria-label": "system metrics of ranks" },
    [option("ranks", "each rank"), option("stats", "min / mean / max across ranks")]);
  const chooser = el("div", { class: "controls", id: "system-controls" },
    [el("label", {}, ["ranks ", view]), el("span", { class: "note", id: "system-note" })]);
  section.append(chooser, grid);
  document.getElementById("charts").after(section);
  const ranks = new Set();
  const plots = new Map(); // name -> {plot, lines: Map(key -> {label, x, y})}
  let stats = null;
  const Plotly = await plotlyReady();
  const dateAxis = { xaxis: { type: "date", title: { text: "wall time" } } };
  const drawRanks = (name) => {
    const { plot, lines } = plots.get(name);
    const many = lines.size > 1;
    const traces = [...lines.values()].map((line, index) => ({
      x: line.x, y: line.y, type: "scatter", mode: "lines", name: plotlyText(line.label),
      line: { color: many ? COLORS[index % COLORS.length] : COLORS[2] },
    }));
    return Plotly.react(plot, traces, layout(name, "wall time", { ...dateAxis, showlegend: many }),
      PLOT_CONFIG);
  };
  const drawStats = (name) => {
    const line = stats.metrics[name];
    if (!line) return Plotly.react(plots.get(name).plot, [], layout(name, "wall time", dateAxis), PLOT_CONFIG);
    const band = { type: "scatter", mode: "lines", x: line.time, line: { width: 0.5, color: COLORS[2] } };
    return Plotly.react(plots.get(name).plot, [
      { ...band, y: line.min, name: "min" },
      { ...band, y: line.max, name: "max", fill: "tonexty", fillcolor: "rgba(44,160,44,0.18)" },
      { type: "scatter", mode: "lines", x: line.time, y: line.mean, name: "mean",
        line: { width: 2, color: COLORS[2] } },
    ], layout(name, "wall time", { ...dateAxis, showlegend: true }), PLOT_CONFIG);
  };
  const drawAll = async () => {
    const draw = view.value === "stats" ? drawStats : drawRanks;
    await Promise.all([...plots.keys()].map(draw));
    section.dataset.view = view.value;
  };
  const readStats = async () => {
    stats = await getJSON(`${api}/system?view=stats&max_points=2000`);
    const note = document.getElementById("system-note");
    note.textContent = stats.bucket_seconds
      ? `per bucket of ${fmtValue(stats.bucket_seconds)} s, across ${ranks.size} ranks` : "";
  };
  const add = (sys) => {
    for (const r of sys.ranks || []) ranks.add(`${r.rank}|${r.host}`);
    for (const [name, lines] of Object.entries(sys.metrics)) {
      if (!plots.has(name)) {
        const plot = el("div", { class: "chart", "data-system": name });
        grid.append(el("figure", {}, [plot]));
        plots.set(name, { plot, lines: new Map() });
      }
      const known = plots.get(name).lines;
      for (const line of lines) {
        const key = `${line.rank}|${line.host}`;
        if (!known.has(key)) known.set(key, { label: rankLabel(line), x: [], y: [] });
        known.get(key).x.push(...line.time);
        known.get(key).y.push(...line.y);
      }
    }
    chooser.hidden = ranks.size < 2; // one process: the charts as they always were
  };
  add(data);
  const wanted = new URLSearchParams(location.search).get("system");
  if (wanted === "stats" && !chooser.hidden) { view.value = "stats"; await readStats(); }
  view.addEventListener("change", () => {
    const address = new URL(location.href);
    if (view.value === "stats") address.searchParams.set("system", "stats");
    else address.searchParams.delete("system");
    history.replaceState(null, "", address);
    (view.value === "stats" ? readStats() : Promise.resolve()).then(drawAll)
      .catch((error) => showError(document.getElementById("system-note"), error));
  });
  await drawAll();
  return {
    last: data.last,
    // new readings of a live run (view=ranks, after the last one)
    async update(sys) {
      add(sys);
      if (view.value === "stats") await readStats();
      await drawAll();
    },
  };
}

// A live run page: new points appended (the axes follow them), the details, the
// metrics table and the status read again at every poll.
async function followRun(api, first, page) {
  const { charts, singles, labels, filter } = page;
  let { machine } = page;
  let last = first.last;
  let systemLast = machine ? machine.last : null;
  const seconds = pollSeconds();
  liveNote(`live: new points every ${seconds} s`, true);
  const tick = async () => {
    const params = new URLSearchParams({ max_points: "2000" });
    if (last) { params.set("after_step", last.step); params.set("after_progress", last.progress); }
    const data = await getJSON(`${api}/curves?${params}`);
    last = data.last || last;
    Object.assign(labels, data.labels);
    const changed = new Set();
    let grown = false;
    for (const [name, curve] of Object.entries(data.metrics)) {
      if (!curve.y.length && (charts.figures.has(name) || !curve.total)) continue;
      if (!charts.figures.has(name)) {
        const before = singles.get(name);
        if (!before && curve.total <= 1) { singles.set(name, curve); grown = true; continue; }
        if (before) {
          singles.delete(name);
          charts.add(name, "run", labels[name] || name, before);
          grown = true;
        }
      }
      charts.add(name, "run", labels[name] || name, curve);
      changed.add(name);
    }
    if (grown || changed.size) filter();
    if (changed.size) await charts.redraw(changed);
    const sys = await getJSON(`${api}/system?max_points=2000${systemLast ? `&after=${encodeURIComponent(systemLast)}` : ""}`);
    systemLast = sys.last || systemLast;
    if (Object.keys(sys.metrics).length) {
      if (!machine) machine = await systemCharts(api, sys);
      else await machine.update(sys);
    }
    showRun(await getJSON(api), labels);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    failures = 0;
    if (!data.live) {
      liveNote(`the run is ${data.status}: no more polling`, false);
      return;
    }
    liveNote(`live: new points every ${seconds} s`, true);
    setTimeout(() => tick().catch(failed), seconds * 1000);
  };
  // A failed poll (a busy server, a restart) is tried again; several in a row end it.
  let failures = 0;
  const failed = (error) => {
    failures += 1;
    if (failures >= MAX_POLL_FAILURES) {
      liveNote(`live updates stopped: ${error.message}`, false);
      return;
    }
    liveNote(`live: the last poll failed (${error.message}), trying again`, true);
    setTimeout(() => tick().catch(failed), seconds * 1000);
  };
  setTimeout(() => tick().catch(failed), seconds * 1000);
}

// A run's (or group's) colour, as every chart draws it.
function swatch(color) {
  const mark = el("span", { class: "swatch", "aria-hidden": "true" });
  mark.style.background = color;
  return mark;
}

// One mean line per group, its band under it; the group's runs in the hover text.
function addGroups(charts, groups) {
  for (const [name, lines] of Object.entries(groups)) {
    for (const line of lines) {
      const label = `${line.key} (${line.runs.length})`;
      const curve = { step: line.step, progress: line.step, y: line.mean, points: line.mean.length,
        total: line.mean.length, non_finite: 0, downsampled: false };
      charts.add(name, `group:${line.key}`, label, curve, line.color,
        { low: line.low, high: line.high });
      charts.figures.get(name).series.at(-1).runs = line.runs.map((r) => r.label).join(", ");
    }
  }
}

// Group by (args, wandb group, tags, status) and the band: both kept in the URL.
function groupControls(params, data) {
  const form = el("form", { id: "group-form", class: "filters", method: "get" });
  for (const name of ["runs", "metrics", "metric", "max_points"]) {
    if (params.get(name)) form.append(el("input", { type: "hidden", name, value: params.get(name) }));
  }
  const option = (value, text, chosen) => {
    const o = el("option", { text });
    o.value = value;
    o.selected = value === chosen;
    return o;
  };
  const argKeys = [...new Set(data.runs.flatMap((r) => Object.keys(r.args)))];
  const group = el("select", { name: "group", "aria-label": "group by" }, [
    option("", "no grouping", params.get("group") || ""),
    ...argKeys.map((k) => option(`args.${k}`, `args.${k}`, params.get("group") || "")),
    ...["group", "tags", "status"].map((k) => option(k, k, params.get("group") || ""))]);
  if (params.get("group") && ![...group.options].some((o) => o.value === params.get("group"))) {
    group.append(option(params.get("group"), params.get("group"), params.get("group")));
  }
  const band = el("select", { name: "band", "aria-label": "band" }, [
    option("minmax", "min–max", params.get("band") || "minmax"),
    option("std", "± std", params.get("band") || "minmax")]);
  form.append(el("label", {}, ["group by ", group]), " ", el("label", {}, ["band ", band]), " ",
    el("button", { type: "submit", text: "apply" }));
  document.getElementById("chart").before(form);
}

// Status cells of the compare table follow the runs.
function updateStatuses(runs) {
  for (const run of runs) {
    const cell = document.querySelector(`[data-run-status="${run.id}"]`);
    if (cell) cell.replaceChildren(statusCell(run.status));
  }
}

// A grouped compare page: a group's line aggregates its runs, so each poll asks for the
// grouped curves again (downsampled by the database) and replaces the lines.
function followGroups(api, charts) {
  const seconds = pollSeconds();
  liveNote(`live: groups redrawn every ${seconds} s`, true);
  const tick = async () => {
    const update = await getJSON(api);
    for (const figure of charts.figures.values()) figure.series = [];
    addGroups(charts, update.groups || {});
    await charts.redraw();
    updateStatuses(update.runs);
    if (!update.runs.some((r) => r.live)) {
      liveNote("every run has ended: no more polling", false);
      return;
    }
    setTimeout(() => tick().catch(stopped), seconds * 1000);
  };
  const stopped = (error) => liveNote(`live updates stopped: ${error.message}`, false);
  setTimeout(() => tick().catch(stopped), seconds * 1000);
}

async function comparePage() {
  const params = new URLSearchParams(location.search);
  const runs = params.get("runs") || "";
  const metrics = params.get("metrics") || params.get("metric") || "";
  const query = new URLSearchParams({ runs, max_points: params.get("max_points") || "2000" });
  if (metrics) query.set("metrics", metrics);
  for (const name of ["group", "band"]) if (params.get(name)) query.set(name, params.get(name));
  const api = `/api/compare/curves?${query}`;
  const data = await getJSON(api);
  groupControls(params, data);
  const labels = data.labels;
  const container = document.getElementById("chart");
  container.className = "charts";
  container.replaceChildren();
  const charts = new CurveCharts(container, data.axes, (m) => labels[m] || m);
  const byId = new Map(data.runs.map((r) => [String(r.id), r]));
  const add = (payload) => {
    if (payload.groups) { addGroups(charts, payload.groups); return; }
    for (const [name, perRun] of Object.entries(payload.metrics)) {
      for (const [id, curve] of Object.entries(perRun)) {
        const run = byId.get(id);
        if (curve.total || charts.figures.has(name)) charts.add(name, id, run.label || runLabel(run), curve, run.color);
      }
    }
  };
  add(data);
  await charts.redraw();
  document.getElementById("table").replaceChildren(sortableTable([
    { label: "", cell: (r) => swatch(r.color) },
    { label: "run", sort: (r) => r.id, cell: (r) => link(`/runs/${r.id}`, r.id), num: true },
    { label: "name", sort: (r) => r.label, cell: (r) => r.label ?? r.name ?? "" },
    ...(data.group ? [{ label: `group (${data.group})`, sort: (r) => r.group, cell: (r) => r.group }] : []),
    ...data.differing.map((key) => ({ label: `args.${key}`, sort: (r) => r.args[key],
      cell: (r) => fmtValue(r.args[key]) })),
    { label: "experiment", sort: (r) => r.experiment, cell: (r) => link(`/experiments/${r.experiment_id}`, r.experiment) },
    { label: "status", sort: (r) => r.status, cell: (r) => el("span", { "data-run-status": r.id }, [statusCell(r.status)]) },
  ], data.runs));
  rendered();
  if (!data.runs.some((r) => r.live)) return;
  if (data.groups) { followGroups(api, charts); return; }
  const last = new Map(data.runs.map((r) => [r.id, r.last]));
  let live = data.runs.filter((r) => r.live).map((r) => r.id);
  const seconds = pollSeconds();
  liveNote(`live: new points every ${seconds} s`, true);
  const tick = async () => {
    const after = live.filter((id) => last.get(id)).map((id) => `${id}:${last.get(id).step}:${last.get(id).progress}`);
    const q = new URLSearchParams({ runs: live.join(","), max_points: "2000" });
    q.set("metrics", [...charts.figures.keys()].join(",") || metrics);
    if (!q.get("metrics")) q.delete("metrics");
    if (after.length) q.set("after", after.join(","));
    const update = await getJSON(`/api/compare/curves?${q}`);
    add(update);
    await charts.redraw();
    for (const run of update.runs) if (run.last) last.set(run.id, run.last);
    updateStatuses(update.runs);
    live = update.runs.filter((r) => r.live).map((r) => r.id);
    if (!live.length) { liveNote("every run has ended: no more polling", false); return; }
    setTimeout(() => tick().catch(stopped), seconds * 1000);
  };
  const stopped = (error) => liveNote(`live updates stopped: ${error.message}`, false);
  setTimeout(() => tick().catch(stopped), seconds * 1000);
}

// -- SQL page --------------------------------------------------------------------
async function sqlPage(api) {
  const target = document.getElementById("table");
  if (!api) { rendered(); return; }
  const csv = document.getElementById("sql-csv");
  let data;
  try {
    data = await getJSON(api);
  } catch (error) {
    target.replaceChildren(el("p", { class: "error", id: "sql-error", text: error.message }));
    document.body.dataset.rendered = "error";
    return;
  }
  csv.href = `${api}&format=csv`;
  csv.setAttribute("download", "sqltrack-query.csv");
  csv.hidden = false;
  document.getElementById("sql-meta").textContent = `${data.rows.length} row` +
    `${data.rows.length === 1 ? "" : "s"}${data.truncated ? ` (${data.note})` : ""}` +
    `${data.cut_values ? `; ${data.cut_values} long value${data.cut_values === 1 ? "" : "s"} cut` : ""}`;
  const columns = data.columns.map((name, index) => ({
    label: name, sort: (row) => row[index], cell: (row) => fmtValue(row[index]),
    num: data.rows.some((row) => typeof row[index] === "number"),
  }));
  target.replaceChildren(sortableTable(columns, data.rows));
  if (data.columns.length >= 2 && data.rows.length) await sqlChart(data);
  rendered();
}

async function sqlChart(data) {
  const controls = document.getElementById("sql-chart-controls");
  const chart = document.getElementById("sql-chart");
  const option = (i) => { const o = el("option", { text: data.columns[i] }); o.value = String(i); return o; };
  const numeric = data.columns.map((_, i) => data.rows.some((r) => typeof r[i] === "number"));
  const firstY = numeric.findIndex((n, i) => n && i > 0);
  const x = el("select", { id: "sql-x", "aria-label": "x column" }, data.columns.map((_, i) => option(i)));
  const y = el("select", { id: "sql-y", "aria-label": "y column" }, data.columns.map((_, i) => option(i)));
  y.value = String(firstY > 0 ? firstY : 1);
  const mode = el("select", { id: "sql-mode", "aria-label": "chart kind" },
    ["markers", "lines"].map((m) => { const o = el("option", { text: m }); o.value = m; return o; }));
  controls.replaceChildren(el("label", {}, ["x ", x]), el("label", {}, ["y ", y]),
    el("label", {}, [" ", mode]));
  controls.hidden = false;
  chart.hidden = false;
  const Plotly = await plotlyReady();
  const draw = () => {
    const xi = Number(x.value);
    const yi = Number(y.value);
    const value = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);
    return Plotly.react(chart, [{
      x: data.rows.map((r) => value(r[xi])), y: data.rows.map((r) => value(r[yi])),
      type: "scatter", mode: mode.value, marker: { color: COLORS[0] },
    }], layout(`${data.columns[yi]} against ${data.columns[xi]}`, data.columns[xi],
      { yaxis: { title: { text: plotlyText(data.columns[yi]) } } }), PLOT_CONFIG);
  };
  for (const control of [x, y, mode]) control.addEventListener("change", draw);
  await draw();
}

const PAGES = {
  experiments: experimentsPage, experiment: experimentPage, run: runPage, compare: comparePage,
  sql: sqlPage,
};

const page = PAGES[document.body.dataset.page];
if (page) {
  page(document.body.dataset.api).catch((error) => {
    showError(document.querySelector("main .table-wrap, main section, main .chart") ||
      document.querySelector("main"), error);
  });
}
