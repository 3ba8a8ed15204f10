/* The feature dashboard's one script (report/dashboard.py writes the data it reads).
   It decodes the JSON blob's packed arrays, then draws the table of latents, the open
   latent's panel (#l<latent> in the address opens it) and the prompts. Text from the run
   goes into the page only as text (textContent, text nodes), never as markup.
   No template syntax in here: the page includes this file through Jinja. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("dashboard-data").textContent);
  const N = D.d_sae, C = D.contexts, WIDTH = D.context, W = 2 * D.context + 1;
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE_ROWS = 200;

  // --- the packed arrays (see dashboard.py): base64 of little-endian binary -------------
  let HALF = null;  // float16 bits -> value, built on first use
  function halfTable() {
    if (HALF) return HALF;
    HALF = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? sign * f * Math.pow(2, -24)
        : e === 31 ? (f ? NaN : sign * Infinity)
        : sign * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return HALF;
  }
  function unpack(p) {
    const bin = atob(p.b), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const buf = bytes.buffer;
    let data;
    if (p.t === "f2") {
      const h = new Uint16Array(buf), table = halfTable(), scale = Math.pow(2, -p.k);
      data = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) data[i] = table[h[i]] * scale;
    } else {
      const kinds = { u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, i4: Int32Array };
      data = new kinds[p.t](buf);
      if (p.p) {
        const pad = p.t === "u1" ? 255 : 65535, out = new Int32Array(data.length);
        for (let i = 0; i < data.length; i++) out[i] = data[i] === pad ? -1 : data[i];
        data = out;
      }
    }
    const cols = p.s.slice(1).reduce((a, b) => a * b, 1);
    return { data: data, shape: p.s, cols: cols };
  }
  const A = {};
  for (const name of Object.keys(D.arrays)) A[name] = unpack(D.arrays[name]);
  function row(name, i) { const a = A[name]; return a.data.subarray(i * a.cols, (i + 1) * a.cols); }
  function at(name, i) { return A[name] ? A[name].data[i] : NaN; }

  // --- small helpers ---------------------------------------------------------------------
  function tok(id) {
    if (id < 0) return "";
    const t = D.vocab[id];
    return t === undefined ? "[" + id + "]" : t;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
    if (!Number.isFinite(x)) return String(x);
    const a = Math.abs(x);
    if (x !== 0 && a < 1e-3) return x.toExponential(2);
    if (a >= 1e4) return Math.round(x).toLocaleString("en-US");
    return String(Number(x.toPrecision(3)));
  }
  function chip(id) { return el("span", { class: "t", title: tok(id), text: tok(id) }); }
  function latentLink(i, extra) {
    return el("a", { href: "#l" + i, class: "latent-link" }, "#" + i, extra ? " " + extra : null);
  }
  const labelText = i => (D.labels && D.labels.text[i]) || "";

  // --- per latent: what the table shows ------------------------------------------------------
  function firesOn(i) {  // the activating tokens of its top contexts, most frequent first
    const w = row("top_windows", i), v = row("top_values", i), count = new Map();
    for (let j = 0; j < C; j++) {
      const id = w[j * W + WIDTH];
      if (v[j] > 0 && id >= 0) count.set(id, (count.get(id) || 0) + 1);
    }
    return [...count.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(e => e[0]);
  }
  const rows = [];
  for (let i = 0; i < N; i++) {
    const fires = firesOn(i), boosts = D.has_dla ? Array.from(row("dla_boost_ids", i).slice(0, 3)) : [];
    const r = {
      id: i, density: at("density", i), max: at("max_active", i), fires: fires, boosts: boosts,
      label: labelText(i), detection: at("label_detection_auroc", i),
      variable: (D.labels && D.labels.variable[i]) || "", dead: at("n_active", i) === 0,
    };
    r.firesText = fires.map(tok).join(" ");
    r.boostsText = boosts.map(tok).join(" ");
    r.search = (r.firesText + "\n" + r.boostsText + "\n" + r.label + "\n" + r.variable).toLowerCase();
    rows.push(r);
  }

  // --- the table -----------------------------------------------------------------------------
  const table = document.getElementById("latent-table"), tbody = table.tBodies[0];
  const search = document.getElementById("search"), hideDead = document.getElementById("hide-dead");
  const more = document.getElementById("more"), count = document.getElementById("count");
  const sort = { key: "density", dir: -1 };
  let shown = [], limit = PAGE_ROWS, selected = -1;

  function sortValue(r, key) {
    if (key === "fires") return r.firesText;
    if (key === "boosts") return r.boostsText;
    return r[key];
  }
  function compare(a, b) {
    const x = sortValue(a, sort.key), y = sortValue(b, sort.key);
    if (typeof x === "number") {  // NaN last, whichever the direction
      const nx = Number.isNaN(x), ny = Number.isNaN(y);
      if (nx || ny) return nx && ny ? a.id - b.id : nx ? 1 : -1;
      return (x - y) * sort.dir || a.id - b.id;
    }
    if (!x || !y) return !x && !y ? a.id - b.id : !x ? 1 : -1;  // empty last
    return x.localeCompare(y) * sort.dir || a.id - b.id;
  }
  function refilter() {
    const q = search.value.trim().toLowerCase(), number = /^#?\d+$/.test(q) ? Number(q.replace("#", "")) : -1;
    shown = rows.filter(r => !(hideDead.checked && r.dead) && (!q || r.id === number || r.search.includes(q)));
    shown.sort(compare);
    limit = PAGE_ROWS;
    draw();
  }
  function cell(content, cls) { return el("td", cls ? { class: cls } : null, content); }
  function chips(ids) { const s = el("span"); for (const id of ids) s.append(chip(id)); return s; }
  function draw() {
    const trs = shown.slice(0, limit).map(r => {
      const tr = el("tr", { "data-latent": r.id },
        cell("#" + r.id), cell(fmt(r.density), "num"), cell(fmt(r.max), "num"), cell(chips(r.fires), "toks"));
      if (D.has_dla) tr.append(cell(chips(r.boosts), "toks"));
      if (D.labels) tr.append(cell(r.label), cell(fmt(r.detection), "num"));
      if (D.labels && D.labels.has_variable) tr.append(cell(r.variable));
      if (r.dead) tr.classList.add("dead");
      if (r.id === selected) tr.classList.add("selected");
      return tr;
    });
    tbody.replaceChildren(...trs);
    const dead = rows.filter(r => r.dead).length;
    count.textContent = shown.length.toLocaleString("en-US") + " of " + N.toLocaleString("en-US") + " latents"
      + (dead ? " (" + dead.toLocaleString("en-US") + " dead)" : "");
    more.hidden = shown.length <= limit;
    more.textContent = "show more (" + (shown.length - limit).toLocaleString("en-US") + " left)";
    for (const th of table.tHead.rows[0].cells) {
      th.classList.toggle("asc", th.dataset.key === sort.key && sort.dir > 0);
      th.classList.toggle("desc", th.dataset.key === sort.key && sort.dir < 0);
    }
  }
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      if (sort.key === key) sort.dir = -sort.dir;
      else { sort.key = key; sort.dir = ["id", "fires", "boosts", "label", "variable"].includes(key) ? 1 : -1; }
      refilter();
    });
  }
  tbody.addEventListener("click", e => {
    const tr = e.target.closest("tr");
    if (tr) location.hash = "l" + tr.dataset.latent;
  });
  search.addEventListener("input", refilter);
  hideDead.addEventListener("change", refilter);
  more.addEventListener("click", () => { limit += PAGE_ROWS; draw(); });

  // --- histograms, as inline SVG -----------------------------------------------------------
  function histogram(counts, edges, opts) {
    let a = 0, b = counts.length - 1;
    while (a <= b && !(counts[a] > 0)) a++;
    while (b >= a && !(counts[b] > 0)) b--;
    if (a > b) return el("p", { class: "note", text: "nothing to draw: no counts" });
    const width = 380, height = 110, left = 4, bottom = 16, n = b - a + 1, bw = (width - 2 * left) / n;
    const y = opts.log ? c => Math.log10(1 + c) : c => c;
    let top = 0;
    for (let j = a; j <= b; j++) top = Math.max(top, y(counts[j]));
    const s = svg("svg", { class: "hist", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           role: "img", "aria-label": opts.title });
    s.append(svg("line", { x1: left, x2: width - left, y1: height - bottom, y2: height - bottom }));
    for (let j = a; j <= b; j++) {
      const h = counts[j] > 0 ? Math.max(1, (height - bottom - 4) * y(counts[j]) / top) : 0;
      const rect = svg("rect", { class: "bar" + (opts.signed && edges[j + 1] <= 0 ? " neg" : ""),
                                 x: left + (j - a) * bw + 0.5, width: Math.max(1, bw - 1),
                                 y: height - bottom - h, height: h });
      const tip = svg("title");
      tip.textContent = fmt(edges[j]) + " to " + fmt(edges[j + 1]) + ": " + fmt(counts[j]);
      rect.append(tip);
      s.append(rect);
    }
    const label = (x, anchor, text) => {
      const t = svg("text", { x: x, y: height - 3, "text-anchor": anchor });
      t.textContent = text;
      s.append(t);
    };
    label(left, "start", fmt(edges[a]));
    label(width / 2, "middle", opts.title);
    label(width - left, "end", fmt(edges[b + 1]));
    return s;
  }

  // --- a latent's panel ----------------------------------------------------------------------
  function context(windows, j, value, max, extra) {
    const w = windows.subarray(j * W, (j + 1) * W), line = el("div", { class: "ctx" });
    if (extra && extra.q !== undefined) line.append(el("span", { class: "q", text: extra.q }));
    for (let p = 0; p < W; p++) {
      if (w[p] < 0) continue;
      if (p === WIDTH) {
        const share = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
        line.append(el("span", { class: "act", style: "background: rgba(255, 140, 0, " + (0.15 + 0.85 * share).toFixed(3) + ")",
                                 title: "activation " + fmt(value) }, tok(w[p])));
      } else {
        line.append(tok(w[p]));
      }
    }
    line.append(el("span", { class: "v", text: fmt(value) }));
    if (extra && extra.effect !== undefined && !Number.isNaN(extra.effect)) {
      line.append(el("span", { class: "eff", title: "change in next-token loss with the latent ablated",
                               text: "\u0394loss " + (extra.effect > 0 ? "+" : "") + fmt(extra.effect) }));
    }
    return line;
  }
  function kvRow(table, name, value) { table.append(el("tr", null, el("td", { text: name }), el("td", null, value))); }

  function openLatent(i) {
    const panel = document.getElementById("panel");
    panel.replaceChildren();
    if (!(i >= 0 && i < N)) {
      panel.append(el("p", { class: "note", text: "No latent " + i + " in this dictionary of " + N + "." }));
      return;
    }
    selected = i;
    for (const tr of tbody.rows) tr.classList.toggle("selected", Number(tr.dataset.latent) === i);
    const max = at("max_active", i), dead = at("n_active", i) === 0;
    panel.append(el("h3", { id: "panel-title", text: "Latent #" + i }));
    if (labelText(i)) panel.append(el("p", { class: "label", text: labelText(i) }));
    const facts = el("table", { class: "kv" });
    kvRow(facts, "density", fmt(at("density", i)));
    kvRow(facts, "tokens active", fmt(at("n_active", i)));
    kvRow(facts, "mean when active", fmt(at("mean_active", i)));
    kvRow(facts, "max", fmt(max));
    if (D.labels && labelText(i)) {
      kvRow(facts, "detection AUROC", fmt(at("label_detection_auroc", i)));
      kvRow(facts, "simulation r", fmt(at("label_simulation_r", i)));
      if (D.labels.tokens[i].length) kvRow(facts, "label built from", chips(D.labels.tokens[i]));
    }
    if (D.labels && D.labels.variable[i]) {
      kvRow(facts, "ground-truth variable", D.labels.variable[i] + " (AUROC " + fmt(at("label_variable_auroc", i)) + ")");
    }
    if (A.effect_mean) {
      kvRow(facts, "causal effect", "\u0394loss " + fmt(at("effect_mean", i)) + " nats, mean over its top contexts, ablated");
    }
    panel.append(facts);
    if (dead) panel.append(el("p", { class: "note", text: "This latent never fired in the scan." }));

    panel.append(el("h4", { text: "Activations" }));
    panel.append(histogram(row("hist_counts", i), D.hist_edges, { title: "activation (log-spaced bins)" }));

    const values = row("top_values", i), windows = row("top_windows", i);
    const effects = A.effect_contexts ? row("effect_contexts", i) : null;
    const top = el("div", { id: "top-contexts" });
    for (let j = 0; j < C; j++) {
      if (!(values[j] > 0)) continue;
      top.append(context(windows, j, values[j], max, { effect: effects && j < effects.length ? effects[j] : undefined }));
    }
    panel.append(el("h4", { text: "Top contexts" + (effects ? ", with the loss change when the latent is ablated" : "") }));
    panel.append(top.childElementCount ? top : el("p", { class: "note", text: "none" }));

    const qv = row("quantile_values", i), qw = row("quantile_windows", i), quant = el("div", { id: "quantiles" });
    for (let j = 0; j < D.quantile_levels.length; j++) {
      if (!(qv[j] > 0)) continue;
      quant.append(context(qw, j, qv[j], max, { q: "q " + fmt(D.quantile_levels[j]) }));
    }
    if (quant.childElementCount) {
      panel.append(el("h4", { text: "Samples at activation quantiles" }), quant);
    }

    if (D.has_dla) {
      panel.append(el("h4", { text: "Direct logit attribution (per unit of activation)" }));
      const bi = row("dla_boost_ids", i), bv = row("dla_boost_values", i);
      const si = row("dla_suppress_ids", i), sv = row("dla_suppress_values", i);
      const logits = el("table", { class: "logits" },
        el("thead", null, el("tr", null, el("th", { text: "boosts" }), el("th", { text: "" }),
                                         el("th", { text: "suppresses" }), el("th", { text: "" }))));
      const body = el("tbody");
      for (let j = 0; j < Math.max(bi.length, si.length); j++) {
        body.append(el("tr", null, el("td", null, j < bi.length ? chip(bi[j]) : ""), el("td", { class: "num", text: j < bv.length ? fmt(bv[j]) : "" }),
                                   el("td", null, j < si.length ? chip(si[j]) : ""), el("td", { class: "num", text: j < sv.length ? fmt(sv[j]) : "" })));
      }
      logits.append(body);
      panel.append(logits);
      panel.append(histogram(row("dla_hist_counts", i), D.dla_hist_edges,
                             { title: "logit effect over the vocabulary (log counts)", log: true, signed: true }));
    } else if (D.dla_skipped) {
      panel.append(el("p", { class: "note", text: "No logit attribution: " + D.dla_skipped + "." }));
    }

    if (D.has_neighbors) {
      const ids = row("neighbor_ids", i), cos = row("neighbor_cos", i), links = el("div", { class: "links", id: "neighbors" });
      for (let j = 0; j < ids.length; j++) if (ids[j] >= 0) links.append(latentLink(ids[j], "(cos " + fmt(cos[j]) + ")"));
      panel.append(el("h4", { text: "Nearest latents by decoder cosine" }), links);
    }
  }
  function route() {
    const m = /^#l(\d+)$/.exec(location.hash);
    if (m) {
      openLatent(Number(m[1]));
      const panel = document.getElementById("panel");
      if (panel.getBoundingClientRect().top < 0 || panel.getBoundingClientRect().top > innerHeight) {
        panel.scrollIntoView({ block: "start" });
      }
    }
  }
  window.addEventListener("hashchange", route);

  // --- the prompts ---------------------------------------------------------------------------
  function drawPrompts() {
    const select = document.getElementById("prompt-select");
    if (!D.prompts || !select) return;
    const box = document.getElementById("prompt-tokens"), list = document.getElementById("prompt-latents");
    let pinned = -1;
    function showToken(p, t) {
      const fired = p.top[t] || [];
      list.replaceChildren(el("h4", null, "Latents firing on ", el("span", { class: "t", text: p.tokens[t] })));
      if (!fired.length) { list.append(el("p", { class: "note", text: "none" })); return; }
      const ul = el("ul", { class: "fired" });
      for (const f of fired) ul.append(el("li", null, latentLink(f[0]), " " + fmt(f[1]) + (labelText(f[0]) ? " \u00b7 " + labelText(f[0]) : "")));
      list.append(ul);
    }
    function show(k) {
      const p = D.prompts[k];
      let top = 0;
      for (const fired of p.top) for (const f of fired) top = Math.max(top, f[1]);
      pinned = -1;
      box.replaceChildren(...p.tokens.map((text, t) => {
        const strongest = (p.top[t] || []).reduce((m, f) => Math.max(m, f[1]), 0);
        const span = el("span", { class: "tok", "data-token": t, text: text,
                                  style: "background: rgba(255, 140, 0, " + (top > 0 ? (0.8 * strongest / top).toFixed(3) : 0) + ")" });
        span.addEventListener("mouseenter", () => { if (pinned < 0) showToken(p, t); });
        span.addEventListener("click", () => {
          for (const s of box.children) s.classList.remove("pinned");
          if (pinned === t) { pinned = -1; return; }
          pinned = t;
          span.classList.add("pinned");
          showToken(p, t);
        });
        return span;
      }));
      list.replaceChildren(el("p", { class: "note", text: "Hover over a token." }));
    }
    D.prompts.forEach((p, k) => {
      const text = p.text.length > 80 ? p.text.slice(0, 80) + "\u2026" : p.text;
      select.append(el("option", { value: k, text: (k + 1) + ". " + text }));
    });
    select.addEventListener("change", () => show(Number(select.value)));
    if (D.prompts.length) show(0);
    else box.append(el("p", { class: "note", text: "no prompts" }));
  }

  refilter();
  drawPrompts();
  route();
  document.body.dataset.ready = "1";
})();
