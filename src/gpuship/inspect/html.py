"""The ``--html`` report: one self-contained page (inline CSS, JS and SVG; no external asset, no network).

The report's JSON is embedded in the page; the script draws a squarified treemap of the final image (layers,
then packages / directories inside them) as SVG, and fills the tables. A toggle switches the treemap between
uncompressed and compressed (download) bytes.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from ..oci.layout import atomic_file
from .report import ImageReport

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gpuship inspect — __TITLE__</title>
<style>
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --bg:#f7f8fb; --accent:#2a6df4; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 16px 24px; background: #10182b; color: #fff; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .meta { color: #b8c2d8; font-size: 13px; word-break: break-all; }
main { padding: 16px 24px 40px; max-width: 1400px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 18px; }
.card span { color: var(--muted); font-size: 12px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin-bottom: 16px; }
section h2 { font-size: 16px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { white-space: pre-line; word-break: break-all; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.arch { display: inline-block; padding: 0 5px; margin: 1px; border-radius: 4px; background: #e8effe; font-family: ui-monospace, monospace; font-size: 11px; }
.arch.ptx { background: #fdf0d8; }
.empty { color: var(--muted); font-style: italic; }
#treemap { width: 100%; height: 460px; display: block; }
#treemap text { pointer-events: none; font-size: 11px; fill: #fff; }
#treemap .layer-label { font-size: 12px; font-weight: 600; fill: #10182b; }
.toggle button { border: 1px solid var(--line); background: #fff; padding: 3px 10px; border-radius: 5px; cursor: pointer; }
.toggle button.on { background: var(--accent); color: #fff; border-color: var(--accent); }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; vertical-align: -1px; }
</style>
</head>
<body>
<header><h1>gpuship inspect</h1><div class="meta" id="meta"></div></header>
<main>
<div class="cards" id="cards"></div>
<section>
  <h2>Where the bytes go</h2>
  <div class="toggle">Treemap of the final image by layer and owner:
    <button id="by-size" class="on" type="button">uncompressed</button>
    <button id="by-compressed" type="button">compressed</button></div>
  <div class="legend"><span><i style="background:#3b7be8"></i>Python distribution</span><span><i style="background:#c2410c"></i>Debian package</span><span><i style="background:#16a34a"></i>model</span><span><i style="background:#64748b"></i>directory (no owner)</span><span><i style="background:#a1a1aa"></i>the rest</span></div>
  <svg id="treemap" role="img" aria-label="size treemap" viewBox="0 0 1200 460" preserveAspectRatio="none"></svg>
</section>
<section><h2>Layers</h2><table id="layers"></table></section>
<section><h2>CUDA libraries and their GPU architectures</h2><table id="cuda"></table></section>
<section><h2>Models</h2><table id="models"></table></section>
<section><h2>Python distributions</h2><table id="python"></table></section>
<section><h2>Debian packages</h2><table id="debian"></table></section>
<section><h2>Largest files</h2><table id="largest"></table></section>
<section><h2>Files stored more than once</h2><table id="duplicates"></table></section>
</main>
<script id="report-data" type="application/json">__DATA__</script>
<script>
"use strict";
const R = JSON.parse(document.getElementById("report-data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";
function fmt(n) {
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0; let v = n;
  while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + u[i];
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function table(id, cols, rows, emptyText) {
  const t = document.getElementById(id);
  const head = el("tr");
  cols.forEach(c => head.appendChild(el("th", c.num ? {class: "num"} : {}, c.title)));
  const thead = el("thead"); thead.appendChild(head); t.appendChild(thead);
  const tbody = el("tbody");
  if (!rows.length) { const tr = el("tr"); tr.appendChild(el("td", {colspan: cols.length, class: "empty"}, emptyText)); tbody.appendChild(tr); }
  rows.forEach(r => {
    const tr = el("tr", {class: "row"});
    cols.forEach(c => {
      const td = el("td", c.num ? {class: "num"} : (c.path ? {class: "path"} : {}));
      const v = c.get(r);
      if (v instanceof Node) td.appendChild(v); else td.textContent = v;
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  });
  t.appendChild(tbody);
}
function archList(names, bytes) {
  const span = el("span");
  names.forEach(n => span.appendChild(el("span", {class: n.startsWith("compute_") ? "arch ptx" : "arch", title: fmt(bytes[n] || 0)}, n)));
  return span;
}
// Squarified treemap (Bruls, Huizing, van Wijk): lays items (with .value) into the rect x,y,w,h.
function squarify(items, x, y, w, h) {
  const out = []; const total = items.reduce((s, i) => s + i.value, 0);
  if (total <= 0 || w <= 0 || h <= 0) return out;
  const scale = (w * h) / total;
  let rest = items.map(i => ({item: i, area: i.value * scale})).filter(a => a.area > 0);
  function worst(row, side) {
    const s = row.reduce((a, r) => a + r.area, 0); let mx = 0, mn = Infinity;
    row.forEach(r => { mx = Math.max(mx, r.area); mn = Math.min(mn, r.area); });
    return Math.max(side * side * mx / (s * s), (s * s) / (side * side * mn));
  }
  while (rest.length) {
    const side = Math.min(w, h); let row = [rest[0]]; let i = 1;
    while (i < rest.length && worst(row.concat([rest[i]]), side) <= worst(row, side)) { row.push(rest[i]); i++; }
    rest = rest.slice(i);
    const s = row.reduce((a, r) => a + r.area, 0);
    if (w >= h) { const cw = s / h; let cy = y; row.forEach(r => { const ch = r.area / cw; out.push({item: r.item, x: x, y: cy, w: cw, h: ch}); cy += ch; }); x += cw; w -= cw; }
    else { const ch = s / w; let cx = x; row.forEach(r => { const cw = r.area / ch; out.push({item: r.item, x: cx, y: y, w: cw, h: ch}); cx += cw; }); y += ch; h -= ch; }
  }
  return out;
}
const COLORS = {python: "#3b7be8", debian: "#c2410c", model: "#16a34a", dir: "#64748b", other: "#a1a1aa"};
function drawTreemap(key) {
  const svg = document.getElementById("treemap");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 1200, H = 460;
  const layers = R.layers.map(l => ({layer: l.index, value: R.blocks.filter(b => b.layer === l.index).reduce((s, b) => s + b[key], 0)}));
  squarify(layers.filter(l => l.value > 0), 0, 0, W, H).forEach(cell => {
    const g = document.createElementNS(SVGNS, "g"); g.setAttribute("class", "layer");
    const frame = document.createElementNS(SVGNS, "rect");
    Object.entries({x: cell.x, y: cell.y, width: cell.w, height: cell.h, fill: "#eef1f6", stroke: "#10182b", "stroke-width": 1.5, class: "layer-rect"}).forEach(([k, v]) => frame.setAttribute(k, v));
    g.appendChild(frame);
    const band = cell.h > 40 ? 16 : 0;
    if (band) {
      const t = document.createElementNS(SVGNS, "text"); t.setAttribute("x", cell.x + 4); t.setAttribute("y", cell.y + 12); t.setAttribute("class", "layer-label");
      t.textContent = "layer " + cell.item.layer + " · " + fmt(cell.item.value); g.appendChild(t);
    }
    const blocks = R.blocks.filter(b => b.layer === cell.item.layer).map(b => Object.assign({value: b[key]}, b));
    squarify(blocks, cell.x + 1, cell.y + band + 1, cell.w - 2, cell.h - band - 2).forEach(c => {
      const r = document.createElementNS(SVGNS, "rect");
      Object.entries({x: c.x, y: c.y, width: Math.max(0, c.w - 1), height: Math.max(0, c.h - 1), fill: COLORS[c.item.kind] || COLORS.other, class: "block"}).forEach(([k, v]) => r.setAttribute(k, v));
      const title = document.createElementNS(SVGNS, "title"); title.textContent = c.item.label + " — " + fmt(c.item.value) + " (layer " + c.item.layer + ")"; r.appendChild(title);
      g.appendChild(r);
      if (c.w > 70 && c.h > 16) {
        const t = document.createElementNS(SVGNS, "text"); t.setAttribute("x", c.x + 3); t.setAttribute("y", c.y + 12);
        const chars = Math.floor((c.w - 6) / 6.2); const label = c.item.label;
        t.textContent = label.length > chars ? label.slice(0, Math.max(1, chars - 1)) + "…" : label; g.appendChild(t);
      }
    });
    svg.appendChild(g);
  });
}
document.getElementById("meta").textContent = R.platform + " · " + R.digest;
[["compressed size", fmt(R.size)], ["uncompressed", fmt(R.uncompressed_size)], ["layers", R.layers.length], ["files (final view)", R.final_files],
 ["stored twice or more", fmt(R.duplicate_bytes)], ["hidden by later layers", fmt(R.shadowed_bytes)], ["CUDA libraries", R.cuda.length]].forEach(([k, v]) => {
  const c = el("div", {class: "card"}); c.appendChild(el("b", {}, String(v))); c.appendChild(el("span", {}, k)); document.getElementById("cards").appendChild(c);
});
table("layers", [
  {title: "#", num: true, get: l => l.index}, {title: "comment", get: l => l.comment || ""}, {title: "digest", path: true, get: l => l.digest.slice(0, 19)},
  {title: "files", num: true, get: l => l.files}, {title: "compressed", num: true, get: l => fmt(l.size)}, {title: "uncompressed", num: true, get: l => fmt(l.uncompressed_size)}],
  R.layers, "no layers");
table("cuda", [
  {title: "library", path: true, get: c => c.path}, {title: "layer", num: true, get: c => c.layer}, {title: "size", num: true, get: c => fmt(c.size)},
  {title: "GPU code", num: true, get: c => fmt(c.fatbin_bytes || 0)}, {title: "SASS", get: c => archList(c.sass || [], c.bytes_by_arch || {})},
  {title: "PTX", get: c => archList(c.ptx || [], c.bytes_by_arch || {})}], R.cuda, "no CUDA libraries");
const pkgCols = [{title: "name", get: p => p.name}, {title: "version", get: p => p.version}, {title: "files", num: true, get: p => p.files},
  {title: "size", num: true, get: p => fmt(p.size)}, {title: "compressed", num: true, get: p => fmt(p.compressed)}, {title: "layers", get: p => p.layers.join(", ")}];
table("models", [{title: "model", path: true, get: m => m.name}, {title: "files", num: true, get: m => m.files},
  {title: "size", num: true, get: m => fmt(m.size)}, {title: "compressed", num: true, get: m => fmt(m.compressed)},
  {title: "layers", get: m => m.layers.join(", ")}], R.models || [], "no model files");
table("python", pkgCols, R.python, "no Python distributions");
table("debian", pkgCols, R.debian, "no Debian packages");
table("largest", [{title: "path", path: true, get: f => f.path}, {title: "layer", num: true, get: f => f.layer}, {title: "size", num: true, get: f => fmt(f.size)},
  {title: "compressed", num: true, get: f => fmt(f.compressed)}], R.largest, "no files");
table("duplicates", [{title: "copies", path: true, get: d => d.copies.map(c => c.path + " (layer " + c.layer + ")").join("\\n")},
  {title: "size", num: true, get: d => fmt(d.size)}, {title: "wasted", num: true, get: d => fmt(d.wasted)}], R.duplicates.slice(0, 200), "no file is stored twice");
function pick(key) {
  document.getElementById("by-size").className = key === "size" ? "on" : "";
  document.getElementById("by-compressed").className = key === "compressed" ? "on" : "";
  drawTreemap(key);
}
document.getElementById("by-size").addEventListener("click", () => pick("size"));
document.getElementById("by-compressed").addEventListener("click", () => pick("compressed"));
pick("size");
document.body.setAttribute("data-rendered", "yes");
</script>
</body>
</html>
"""


def render_html(report: ImageReport, title: str = "") -> str:
    """The report as one self-contained HTML page."""
    data = json.dumps(report.to_json(), sort_keys=True, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__TITLE__", html.escape(title or report.digest)).replace("__DATA__", data)


def write_html(report: ImageReport, path: Path | str, title: str = "") -> Path:
    """Write the page (temp file + rename: complete or absent)."""
    path = Path(path)
    with atomic_file(path) as fh:
        fh.write(render_html(report, title).encode())
    return Path(os.fspath(path))
