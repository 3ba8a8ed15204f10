/* The attribution-graph viewer's one script (report/graph_page.py writes the data it
   reads). It lays the graph out (x the token position, y the layer), draws it as inline
   SVG, one element per node and one path per edge, and wires the tooltip, the pin (a
   click highlights every path through a node) and the edge threshold. Text from the
   graph goes into the page only as text (textContent, text nodes), never as markup. No
   template syntax in here: the page includes this file through Jinja. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("graph-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const nodes = D.nodes, links = D.links, L = D.n_layers;
  const nPos = Math.max(D.tokens.length, 1 + nodes.reduce((m, n) => Math.max(m, n.pos), -1));
  const KIND = { feature: "transcoder feature", error: "MLP reconstruction error", embedding: "embedding",
                 logit: "logit" };

  function svg(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const k of Object.keys(attrs || {})) {
      if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
    if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
    const a = Math.abs(x);
    if (x !== 0 && a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(3)));
  }
  function visible(text) {  // a token as it reads in a label: whitespace made visible
    const t = String(text).replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
    return t === "" ? "\u2205" : t;
  }
  function short(text, n) {
    const t = visible(text);
    return t.length > n ? t.slice(0, n - 1) + "\u2026" : t;
  }

  // --- the links, both ways ------------------------------------------------------------------
  const ins = nodes.map(() => []), outs = nodes.map(() => []);
  let maxW = 0;
  links.forEach((l, k) => { outs[l[0]].push(k); ins[l[1]].push(k); maxW = Math.max(maxW, Math.abs(l[2])); });
  maxW = maxW || 1;

  // --- layout: one band per row (embeddings, layers 0..L-1, logits), one column per token ----
  const nRows = L + 2;
  const rowOf = n => n.layer + 1;  // embeddings (-1) at row 0, logits (L) at row L + 1
  const cells = new Map();
  nodes.forEach((n, i) => {
    const key = rowOf(n) * nPos + n.pos;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(i);
  });
  const order = { embedding: 0, logit: 0, feature: 1, error: 2 };
  for (const list of cells.values()) {  // biggest first, errors at the end of their cell
    list.sort((a, b) => (order[nodes[a].kind] - order[nodes[b].kind]) ||
      ((nodes[b].share || nodes[b].prob || 0) - (nodes[a].share || nodes[a].prob || 0)));
  }
  const SP = 15, PER_LINE = 8, LOGITS_PER_LINE = 16, LINE = 15, PAD = 12, LEFT = 60, TOP = 70, BOTTOM = 100;
  const logitRow = nRows - 1;
  const perLine = new Array(nPos).fill(1), lines = new Array(nRows).fill(1), busy = new Array(nPos).fill(false);
  const lineOf = (r, c) => r === logitRow ? LOGITS_PER_LINE : perLine[c];
  for (const [key, list] of cells) {
    const r = Math.floor(key / nPos), c = key % nPos;
    if (r !== logitRow) perLine[c] = Math.max(perLine[c], Math.min(list.length, PER_LINE));
    if (r !== 0) busy[c] = true;
  }
  const colW = perLine.map((k, c) => Math.max(busy[c] ? 44 : 28, k * SP + PAD));
  for (const [key, list] of cells) {
    const r = Math.floor(key / nPos), c = key % nPos;
    if (r === logitRow) colW[c] = Math.max(colW[c], Math.min(list.length, LOGITS_PER_LINE) * SP + PAD);
    lines[r] = Math.max(lines[r], Math.ceil(list.length / lineOf(r, c)));
  }
  const colX = [];
  let x = LEFT;
  for (let c = 0; c < nPos; c++) { colX.push(x); x += colW[c]; }
  const width = x + 20;
  const rowH = lines.map(k => Math.max(62, k * LINE + 40)), rowY = new Array(nRows);
  let y = TOP;
  for (let r = nRows - 1; r >= 0; r--) { rowY[r] = y; y += rowH[r]; }  // logits on top
  const height = y + BOTTOM;
  const pos = nodes.map(() => [0, 0]);
  for (const [key, list] of cells) {
    const r = Math.floor(key / nPos), c = key % nPos, k = Math.min(lineOf(r, c), list.length);
    const nLines = Math.ceil(list.length / k);
    list.forEach((i, j) => {
      const line = Math.floor(j / k), inLine = Math.min(k, list.length - line * k);
      const cx = colX[c] + colW[c] / 2 + ((j % k) - (inLine - 1) / 2) * SP;
      const cy = rowY[r] + rowH[r] / 2 + (line - (nLines - 1) / 2) * LINE;
      pos[i] = [cx, cy];
    });
  }
  let maxShare = 0;
  for (const n of nodes) if (n.share !== null && n.share !== undefined) maxShare = Math.max(maxShare, n.share);
  function radius(n) {
    const v = n.kind === "logit" ? (n.prob || 0) : (maxShare > 0 ? (n.share || 0) / maxShare : 0);
    return 2.5 + 4.5 * Math.sqrt(Math.max(0, Math.min(1, v)));
  }

  // --- drawing -------------------------------------------------------------------------------
  const root = svg("svg", { class: "graph", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                            role: "img", "aria-label": "attribution graph" });
  const background = svg("rect", { class: "background", x: 0, y: 0, width: width, height: height, fill: "#fff" });
  root.append(background);
  // the row names in a narrow SVG of their own, which stays at the left as the graph scrolls
  const rowNames = svg("svg", { class: "row-names", width: 58, height: height, viewBox: "0 0 58 " + height });
  for (let r = 0; r < nRows; r++) {
    if (r % 2 === 1) root.append(svg("rect", { class: "band", x: 0, y: rowY[r], width: width - 20, height: rowH[r] }));
    const name = r === 0 ? "embed" : r === nRows - 1 ? "logits" : "layer " + (r - 1);
    rowNames.append(svg("text", { class: "row-label", x: 6, y: rowY[r] + rowH[r] / 2 + 4, text: name }));
  }
  for (let c = 0; c < nPos; c++) {
    const cx = colX[c] + colW[c] / 2, ty = height - BOTTOM + 14;
    const label = svg("text", { class: "col-label", x: cx, y: ty, "text-anchor": "end",
                                transform: "rotate(-50 " + cx + " " + ty + ")" });
    label.textContent = short(D.tokens[c] === undefined ? "" : D.tokens[c], 14);
    const tip = svg("title");
    tip.textContent = c + ": " + visible(D.tokens[c] === undefined ? "" : D.tokens[c]);
    label.append(tip);
    root.append(label);
  }
  const linkLayer = svg("g", { class: "links" }), nodeLayer = svg("g", { class: "nodes" });
  root.append(linkLayer, nodeLayer);
  const linkEls = links.map(l => {
    const [sx, sy] = pos[l[0]], [tx, ty] = pos[l[1]], rel = Math.abs(l[2]) / maxW;
    const my = (sy + ty) / 2;
    const p = svg("path", { class: "link " + (l[2] >= 0 ? "pos" : "neg"),
                            d: "M" + sx + " " + sy + "C" + sx + " " + my + " " + tx + " " + my + " " + tx + " " + ty,
                            "stroke-width": (0.3 + 3.2 * rel).toFixed(2), "stroke-opacity": (0.18 + 0.6 * rel).toFixed(2) });
    linkLayer.append(p);
    return p;
  });
  function shape(n, i) {
    const [cx, cy] = pos[i], r = radius(n);
    let e;
    if (n.kind === "feature") e = svg("circle", { cx: cx, cy: cy, r: r });
    else if (n.kind === "error") e = svg("rect", { x: cx - r, y: cy - r, width: 2 * r, height: 2 * r });
    else if (n.kind === "embedding") {
      const d = r * 1.35;
      e = svg("polygon", { points: [[cx, cy - d], [cx + d, cy], [cx, cy + d], [cx - d, cy]].map(p => p.join(",")).join(" ") });
    } else {
      const pts = [];
      for (let k = 0; k < 6; k++) pts.push([cx + r * 1.2 * Math.cos(Math.PI / 3 * k), cy + r * 1.2 * Math.sin(Math.PI / 3 * k)]);
      e = svg("polygon", { points: pts.map(p => p.map(v => v.toFixed(2)).join(",")).join(" ") });
    }
    e.setAttribute("class", "node " + n.kind);
    e.setAttribute("data-index", i);
    return e;
  }
  const nodeEls = nodes.map((n, i) => {
    const e = shape(n, i);
    nodeLayer.append(e);
    e.addEventListener("mouseenter", ev => hover(i, ev));
    e.addEventListener("mousemove", ev => place(ev));
    e.addEventListener("mouseleave", () => unhover(i));
    e.addEventListener("click", ev => { ev.stopPropagation(); pin(pinned === i ? null : i); });
    return e;
  });
  nodes.forEach((n, i) => {  // the output token above each logit
    if (n.kind !== "logit") return;
    const m = /^Output "([\s\S]*)" \(p=/.exec(n.label);
    const lx = pos[i][0] + 3, ly = pos[i][1] - radius(n) - 5;
    const t = svg("text", { class: "logit-label", x: lx, y: ly, transform: "rotate(-60 " + lx + " " + ly + ")" });
    t.textContent = short(m ? m[1] : n.label, 12);
    nodeLayer.append(t);
  });
  background.addEventListener("click", () => pin(null));
  const view = document.getElementById("graph-view");
  view.append(el("div", { class: "graph-inner" }, rowNames, root));
  view.scrollLeft = view.scrollWidth;  // the logits, and most of the graph, are at the end

  // --- what a node says ----------------------------------------------------------------------
  function title(n) {
    if (n.label) return n.label;
    const token = visible(D.tokens[n.pos] === undefined ? "" : D.tokens[n.pos]);
    if (n.kind === "embedding") return "Embedding of \u201c" + token + "\u201d";
    if (n.kind === "error") return "MLP error, layer " + n.layer;
    if (n.kind === "logit") return "Logit " + n.id;
    return "Feature " + n.id;
  }
  function where(n) {
    const token = visible(D.tokens[n.pos] === undefined ? "" : D.tokens[n.pos]);
    const layer = n.kind === "embedding" ? "" : n.kind === "logit" ? "" : ", layer " + n.layer;
    return KIND[n.kind] + layer + ", position " + n.pos + " (\u201c" + token + "\u201d)";
  }
  function context(text) {  // the activating token, between the marks, as its own span
    const div = el("div", { class: "ctx" });
    const open = D.marks[0], close = D.marks[1];
    let rest = String(text);
    while (rest.length) {
      const a = rest.indexOf(open), b = a < 0 ? -1 : rest.indexOf(close, a + open.length);
      if (a < 0 || b < 0) { div.append(rest); break; }
      div.append(rest.slice(0, a), el("span", { class: "mark", text: rest.slice(a + open.length, b) }));
      rest = rest.slice(b + close.length);
    }
    return div;
  }
  function describe(i, into) {
    const n = nodes[i];
    into.append(el("div", { class: "node-label", text: title(n) }), el("div", { class: "node-kind", text: where(n) }));
    const figures = el("div", { class: "figures" });
    if (n.kind === "feature") figures.append(el("span", { text: "activation " + fmt(n.act) }));
    if (n.kind === "logit") figures.append(el("span", { text: "probability " + fmt(n.prob) }));
    if (n.share !== null && n.share !== undefined) figures.append(el("span", { text: "influence " + fmt(n.share) }));
    if (n.inf !== null && n.inf !== undefined) figures.append(el("span", { text: "cumulative " + fmt(n.inf) }));
    figures.append(el("span", { text: ins[i].length + " in, " + outs[i].length + " out" }));
    into.append(figures);
    const texts = D.contexts[String(i)];
    if (texts) for (const t of texts) into.append(context(t));
  }

  // --- hover ---------------------------------------------------------------------------------
  const tooltip = document.getElementById("tooltip");
  function place(ev) {
    const w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    let left = ev.clientX + 14, top = ev.clientY + 14;
    if (left + w > window.innerWidth - 4) left = Math.max(4, ev.clientX - w - 14);
    if (top + h > window.innerHeight - 4) top = Math.max(4, ev.clientY - h - 14);
    tooltip.style.left = left + "px";
    tooltip.style.top = top + "px";
  }
  function hover(i, ev) {
    tooltip.replaceChildren();
    describe(i, tooltip);
    tooltip.hidden = false;
    tooltip.dataset.index = i;
    if (ev) place(ev);
    nodeEls[i].classList.add("hover");
    for (const k of ins[i].concat(outs[i])) linkEls[k].classList.add("near");
  }
  function unhover(i) {
    tooltip.hidden = true;
    nodeEls[i].classList.remove("hover");
    for (const k of ins[i].concat(outs[i])) linkEls[k].classList.remove("near");
  }

  // --- the edge threshold ----------------------------------------------------------------------
  const slider = document.getElementById("threshold");
  let cut = 0;
  const shown = k => Math.abs(links[k][2]) >= cut;
  function threshold() {
    const v = Number(slider.value) / 100;
    cut = v === 0 ? 0 : maxW * v * v;  // squared: finer steps among the weak edges
    let n = 0;
    linkEls.forEach((e, k) => { const on = shown(k); e.classList.toggle("off", !on); n += on; });
    document.getElementById("threshold-value").textContent = v === 0 ? "(all edges)" : "|weight| \u2265 " + fmt(cut);
    document.getElementById("edge-count").textContent = n + " of " + links.length + " edges shown";
    if (pinned !== null) pin(pinned);
  }

  // --- the pin: every path through a node --------------------------------------------------------
  const panel = document.getElementById("node-panel");
  let pinned = null;
  function reach(start, edges, end) {  // nodes reachable from start along shown edges
    const seen = new Set([start]), stack = [start];
    while (stack.length) {
      const i = stack.pop();
      for (const k of edges[i]) {
        if (!shown(k)) continue;
        const j = links[k][end];
        if (!seen.has(j)) { seen.add(j); stack.push(j); }
      }
    }
    return seen;
  }
  function pin(i) {
    pinned = i;
    root.classList.toggle("pinned", i !== null);
    for (const e of nodeEls) e.classList.remove("on", "pin");
    for (const e of linkEls) e.classList.remove("on");
    if (i === null) {
      panel.replaceChildren(el("p", { class: "note", text: "Click a node to pin it: its label, figures, strongest inputs and outputs." }));
      return;
    }
    const up = reach(i, ins, 0), down = reach(i, outs, 1);  // ancestors (and i), descendants (and i)
    for (const j of up) nodeEls[j].classList.add("on");
    for (const j of down) nodeEls[j].classList.add("on");
    nodeEls[i].classList.add("pin");
    links.forEach((l, k) => {
      if (shown(k) && (up.has(l[1]) || down.has(l[0]))) linkEls[k].classList.add("on");
    });
    panel.replaceChildren(el("h3", { text: "Pinned" }));
    describe(i, panel);
    panel.append(el("p", { class: "note", text: (up.size - 1) + " ancestors and " + (down.size - 1) +
                           " descendants along the edges shown" }));
    for (const [name, edges, end] of [["strongest inputs", ins[i], 0], ["strongest outputs", outs[i], 1]]) {
      if (!edges.length) continue;
      const top = edges.slice().sort((a, b) => Math.abs(links[b][2]) - Math.abs(links[a][2])).slice(0, 8);
      const body = el("tbody");
      for (const k of top) {
        const j = links[k][end];
        const go = el("button", { class: "jump", type: "button", text: short(title(nodes[j]), 40) });
        go.addEventListener("click", () => pin(j));
        body.append(el("tr", {}, el("td", {}, go), el("td", { class: "num", text: fmt(links[k][2]) })));
      }
      panel.append(el("h4", { text: name }), el("table", { class: "edges" }, body));
    }
  }
  slider.addEventListener("input", threshold);
  document.addEventListener("keydown", ev => { if (ev.key === "Escape") pin(null); });
  threshold();
  document.body.dataset.ready = "1";
})();
