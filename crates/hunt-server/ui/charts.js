// Small SVG charts for the dashboard: a sparkline, a line chart over time (with a
// dashed forecast), bars over time and a funnel. Each returns an <svg> element drawn
// with attributes only (no inline style, which the page's Content-Security-Policy
// forbids), labelled for screen readers, and scaled by its viewBox to the width CSS
// gives it.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, children) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children || []) e.appendChild(c);
  return e;
}

function text(x, y, s, attrs) {
  const t = el("text", { x, y, ...attrs });
  t.textContent = s;
  return t;
}

function svg(width, height, label, cls) {
  return el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    height,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": label,
    class: cls,
  });
}

// A scale from [d0, d1] onto [r0, r1]; a flat domain maps to the middle.
function scale(d0, d1, r0, r1) {
  if (d1 === d0) return () => (r0 + r1) / 2;
  return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
}

function finite(values) {
  return values.filter((v) => typeof v === "number" && Number.isFinite(v));
}

// A line of `values` (numbers or null for gaps), without axes.
export function sparkline(values, label) {
  const width = 200;
  const height = 36;
  const s = svg(width, height, label, "spark");
  const known = finite(values);
  if (values.length < 2 || known.length === 0) {
    s.setAttribute("preserveAspectRatio", "xMinYMid meet");
    s.appendChild(text(4, height / 2 + 4, "collecting…", { class: "chart-note" }));
    return s;
  }
  const x = scale(0, values.length - 1, 1, width - 1);
  const y = scale(0, Math.max(...known, 0) || 1, height - 2, 2);
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  s.appendChild(el("path", { d, class: "line", "vector-effect": "non-scaling-stroke" }));
  return s;
}

function clock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 5);
}

// Axes and a frame for a chart over time; returns [svg, x scale, y scale, inner box].
function frame(label, t0, t1, yMax, opts) {
  const width = opts.width || 900;
  const height = opts.height || 220;
  const left = 44;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const s = svg(width, height, label, "chart");
  s.setAttribute("preserveAspectRatio", "xMidYMid meet");
  s.removeAttribute("height");
  const x = scale(t0, t1, left, width - right);
  const y = scale(0, yMax || 1, height - bottom, top);
  s.appendChild(el("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }));
  s.appendChild(el("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (const v of [0, (yMax || 1) / 2, yMax || 1]) {
    s.appendChild(text(left - 4, y(v) + 4, formatTick(v), { class: "tick", "text-anchor": "end" }));
  }
  for (const [t, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
    s.appendChild(text(x(t), height - 5, clock(t), { class: "tick", "text-anchor": anchor }));
  }
  return [s, x, y];
}

function formatTick(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (v >= 10 || v === 0) return v.toFixed(0);
  return v.toFixed(1);
}

// Lines over time. `series`: [{ points: [[ms, value]], cls }]; a series with
// `dashed: true` is drawn dashed (a forecast). `t1` may reach past the last point.
export function timeChart(label, series, opts = {}) {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    const s = svg(300, 30, label, "chart note");
    s.setAttribute("preserveAspectRatio", "xMinYMid meet");
    s.appendChild(text(2, 20, "no data yet: a point every 5 s", { class: "chart-note" }));
    return s;
  }
  const t0 = opts.t0 ?? Math.min(...all.map((p) => p[0]));
  const t1 = opts.t1 ?? Math.max(...all.map((p) => p[0]));
  const yMax = opts.yMax ?? Math.max(...all.map((p) => p[1]), 1);
  const [s, x, y] = frame(label, t0, t1, yMax, opts);
  for (const line of series) {
    if (line.points.length === 0) continue;
    const d = line.points
      .map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join("");
    s.appendChild(el("path", { d, class: `line ${line.cls || ""}${line.dashed ? " dashed" : ""}` }));
  }
  return s;
}

// Bars over time: `points` [[ms, value]], each bar ending at its time.
export function barsOverTime(label, points, opts = {}) {
  if (points.length === 0) {
    const s = svg(300, 30, label, "chart note");
    s.setAttribute("preserveAspectRatio", "xMinYMid meet");
    s.appendChild(text(2, 20, "no data yet: a point every 5 s", { class: "chart-note" }));
    return s;
  }
  const step = points.length > 1 ? points[1][0] - points[0][0] : 5000;
  const t0 = points[0][0] - step;
  const t1 = points[points.length - 1][0];
  const yMax = Math.max(...points.map((p) => p[1]), 1);
  const [s, x, y] = frame(label, t0, t1, yMax, opts);
  const w = Math.max(1, x(t0 + step) - x(t0) - 1);
  for (const [t, v] of points) {
    if (v <= 0) continue;
    const top = y(v);
    s.appendChild(el("rect", { x: (x(t) - w).toFixed(1), y: top.toFixed(1), width: w.toFixed(1), height: (y(0) - top).toFixed(1), class: "bar" }));
  }
  return s;
}

// Horizontal bars, widest first: `rows` [{ label, value }].
export function funnel(label, rows) {
  const width = 460;
  const rowH = 24;
  const labelW = 140;
  const height = rows.length * rowH + 4;
  const s = svg(width, height, label, "funnel");
  s.setAttribute("preserveAspectRatio", "xMinYMin meet");
  s.removeAttribute("height");
  const max = Math.max(...rows.map((r) => r.value), 1);
  const x = scale(0, max, 0, width - labelW - 50);
  rows.forEach((r, i) => {
    const top = 2 + i * rowH;
    s.appendChild(text(labelW - 6, top + 17, r.label, { class: "tick", "text-anchor": "end" }));
    s.appendChild(el("rect", { x: labelW, y: top + 3, width: Math.max(x(r.value), r.value > 0 ? 2 : 0).toFixed(1), height: rowH - 8, class: `bar ${r.cls || ""}` }));
    s.appendChild(text(labelW + x(r.value) + 6, top + 17, String(r.value), { class: "value" }));
  });
  return s;
}
