/* The capabilities page's one script (report/capabilities_page.py writes the data it reads).
   It draws each suite's sortable table of capabilities, the open capability's items
   (#storyworld/ngram in the address opens them; filterable), the emergence curves and
   head formation as inline SVG, the mining shares and examples, and the models side by
   side. Text from the run goes into the page only as text (textContent, text nodes),
   never as markup. No template syntax in here: the page includes this file through Jinja. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("capabilities-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#bf3989",
                   "#4d2d00", "#6e7781", "#953800", "#116329", "#0550ae"];

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function missing(x) { return x === null || x === undefined || (typeof x === "number" && !Number.isFinite(x)); }
  function fmt(x) {
    if (missing(x)) return "\u2013";
    if (typeof x !== "number") return String(x);
    const a = Math.abs(x);
    if (x !== 0 && a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(3)));
  }
  function interval(ci) { return ci ? "[" + fmt(ci[0]) + ", " + fmt(ci[1]) + "]" : ""; }
  function compareBy(value, dir, order) {  // missing values last, ties in the original order
    return (a, b) => {
      const x = value(a), y = value(b), mx = missing(x) || x === "", my = missing(y) || y === "";
      if (mx || my) return mx === my ? order(a) - order(b) : mx ? 1 : -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return order(a) - order(b);
    };
  }
  function sortable(headRow, columns, sort, draw) {  // a header per column; a click sorts by it
    for (const c of columns) {
      const th = el("th", { "data-key": c.key, title: c.title || "", text: c.name });
      th.addEventListener("click", () => {
        if (sort.key === c.key) sort.dir = -sort.dir;
        else { sort.key = c.key; sort.dir = c.text ? 1 : -1; }  // numbers largest first
        draw();
      });
      headRow.append(th);
    }
  }
  function marks(headRow, sort) {
    for (const th of headRow.cells) {
      th.classList.toggle("asc", th.dataset.key === sort.key && sort.dir > 0);
      th.classList.toggle("desc", th.dataset.key === sort.key && sort.dir < 0);
    }
  }

  // --- the capability tables, one per suite -------------------------------------------------
  let open = null;  // {suite, capability}
  const capabilityColumns = [{ key: "order", name: "capability", title: "in the suite's order", text: true }]
    .concat(D.columns);
  const tables = [];
  for (const table of document.querySelectorAll("table.capability-table")) {
    const suite = table.dataset.suite, S = D.suites[suite];
    if (!S) continue;
    const sort = { key: "order", dir: 1 }, headRow = table.tHead.rows[0], tbody = table.tBodies[0];
    const rows = S.capabilities.map((c, i) => ({ c: c, order: i }));
    const value = r => sort.key === "order" ? r.order : r.c[sort.key];
    function draw() {
      const body = document.createDocumentFragment();
      for (const r of rows.slice().sort(compareBy(value, sort.dir, r => r.order))) {
        const c = r.c, tr = el("tr", { "data-capability": c.name }, el("td", { text: c.name }));
        for (const col of D.columns) {
          const td = el("td", { class: "num", text: fmt(c[col.key]) });
          const ci = c[col.key + "_ci"];
          if (ci) td.append(el("span", { class: "ci", text: " " + interval(ci) }));
          tr.append(td);
        }
        if (open && open.suite === suite && open.capability === c.name) tr.classList.add("selected");
        body.append(tr);
      }
      tbody.replaceChildren(body);
      marks(headRow, sort);
    }
    sortable(headRow, capabilityColumns, sort, draw);
    tbody.addEventListener("click", e => {
      const tr = e.target.closest("tr");
      if (tr) location.hash = "#" + encodeURIComponent(suite) + "/" + encodeURIComponent(tr.dataset.capability);
    });
    tables.push({ suite: suite, tbody: tbody, draw: draw });
    draw();
  }

  // --- the open capability's items ------------------------------------------------------------
  const panel = document.getElementById("item-panel"), count = document.getElementById("item-count");
  const filter = document.getElementById("item-filter"), search = document.getElementById("item-search");
  const itemColumns = [
    { key: "order", name: "#", title: "the item's place in the suite file", text: true },
    { key: "prompt", name: "prompt (its end)", title: "the prompt's last characters; the whole is in capabilities.json", text: true },
    { key: "answer", name: "answer", text: true }, { key: "wrong", name: "wrong", text: true },
    { key: "prob", name: "p(answer)", title: "probability of the answer's tokens" },
    { key: "rank", name: "rank", title: "rank of the answer's first token (0 = the model's first choice)" },
    { key: "logit_diff", name: "logit diff", title: "logit(answer) - logit(wrong) where they first differ" },
    { key: "top1", name: "top-1", title: "greedy decoding writes the answer" }];
  const itemSort = { key: "order", dir: 1 };
  const FILTERS = {
    all: () => true,
    failures: x => x.rank > 0,
    wrong: x => !x.top1,
    "prefers-wrong": x => !missing(x.logit_diff) && x.logit_diff < 0 };
  function visible(text) { return text.replace(/\n/g, "\u21b5"); }
  function drawItems() {
    if (!open) return;
    const c = D.suites[open.suite].capabilities.find(c => c.name === open.capability);
    const keep = FILTERS[filter.value] || FILTERS.all, needle = search.value.toLowerCase();
    const rows = c.items.map((x, i) => ({ x: x, order: i }))
      .filter(r => keep(r.x) && (!needle || r.x.prompt.toLowerCase().includes(needle)));
    const value = r => itemSort.key === "order" ? r.order : itemSort.key === "top1" ? Number(r.x.top1) : r.x[itemSort.key];
    rows.sort(compareBy(value, itemSort.dir, r => r.order));
    const head = el("tr");
    const table = el("table", { id: "item-table", class: "wide" }, el("thead", {}, head));
    sortable(head, itemColumns, itemSort, drawItems);
    marks(head, itemSort);
    const body = el("tbody");
    for (const r of rows) {
      const x = r.x;
      const tr = el("tr", { class: x.top1 ? "right" : x.rank > 0 ? "fail" : "" },
        el("td", { class: "num", text: String(r.order + 1) }),
        el("td", { class: "prompt", title: x.truncated ? "cut at its start to fit the context" : "", text: visible(x.prompt) }),
        el("td", { class: "answer", text: visible(x.answer) }),
        el("td", { class: "answer", text: x.wrong === null || x.wrong === undefined ? "\u2013" : visible(x.wrong) }),
        el("td", { class: "num", text: fmt(x.prob) }), el("td", { class: "num", text: String(x.rank) }),
        el("td", { class: "num", text: fmt(x.logit_diff) }), el("td", { text: x.top1 ? "yes" : "no" }));
      body.append(tr);
    }
    table.append(body);
    panel.replaceChildren(el("h3", { id: "items-title", text: open.suite + " / " + open.capability }),
      el("p", { class: "note", text: c.n + " items: mean p " + fmt(c.mean_prob) + " " + interval(c.mean_prob_ci)
        + ", top-1 " + fmt(c.top1) + " " + interval(c.top1_ci)
        + (missing(c.mean_logit_diff) ? "" : ", logit difference " + fmt(c.mean_logit_diff) + " " + interval(c.mean_logit_diff_ci)) }),
      el("div", { class: "table-wrap" }, table));
    count.textContent = rows.length + " of " + c.items.length + " items";
  }
  function openCapability(suite, capability) {
    const S = D.suites[suite];
    if (!S || !S.capabilities.some(c => c.name === capability)) return false;
    open = { suite: suite, capability: capability };
    for (const t of tables)
      for (const tr of t.tbody.rows) tr.classList.toggle("selected", t.suite === suite && tr.dataset.capability === capability);
    drawItems();
    return true;
  }
  filter.addEventListener("change", drawItems);
  search.addEventListener("input", drawItems);
  function fromHash() {
    const parts = location.hash.slice(1).split("/").map(decodeURIComponent);
    return parts.length === 2 && openCapability(parts[0], parts[1]);
  }
  window.addEventListener("hashchange", () => { if (fromHash()) document.getElementById("items").scrollIntoView(); });

  // --- across training: inline SVG ---------------------------------------------------------------
  const W = 400, H = 250, M = { l: 52, r: 12, t: 22, b: 40 };
  const allTokens = D.emergence.map(r => r.tokens).concat((D.formation || []).map(r => r.tokens));
  const xMin = Math.log10(Math.min.apply(null, allTokens.length ? allTokens : [1]));
  const xMax = Math.log10(Math.max.apply(null, allTokens.length ? allTokens : [10]));
  function chart(title, series, yLabel, yRange) {
    // series: [{name, colour, points: [[tokens, y]]}]; y missing points are skipped
    const ys = series.flatMap(s => s.points.map(p => p[1])).filter(y => !missing(y));
    let lo = yRange ? yRange[0] : Math.min.apply(null, ys), hi = yRange ? yRange[1] : Math.max.apply(null, ys);
    if (!ys.length) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const span = xMax - xMin || 1;
    const X = t => M.l + (Math.log10(t) - xMin) / span * (W - M.l - M.r);
    const Y = y => H - M.b - (y - lo) / (hi - lo) * (H - M.t - M.b);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "chart", role: "img" });
    s.append(svg("title", {}, title));
    s.append(svg("text", { x: M.l, y: 14, class: "chart-title" }, title));
    s.append(svg("line", { x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b, class: "axis" }),
             svg("line", { x1: M.l, y1: M.t, x2: M.l, y2: H - M.b, class: "axis" }));
    for (let e = Math.ceil(xMin); e <= Math.floor(xMax); e++) {
      const x = X(Math.pow(10, e));
      s.append(svg("line", { x1: x, y1: H - M.b, x2: x, y2: H - M.b + 4, class: "axis" }),
               svg("text", { x: x, y: H - M.b + 16, class: "tick", "text-anchor": "middle" }, "1e" + e));
    }
    for (let k = 0; k <= 4; k++) {
      const y = lo + (hi - lo) * k / 4;
      s.append(svg("line", { x1: M.l, y1: Y(y), x2: W - M.r, y2: Y(y), class: "grid" }),
               svg("text", { x: M.l - 6, y: Y(y) + 4, class: "tick", "text-anchor": "end" }, fmt(y)));
    }
    s.append(svg("text", { x: (M.l + W - M.r) / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, "training tokens"),
             svg("text", { x: 12, y: (M.t + H - M.b) / 2, class: "tick", "text-anchor": "middle",
                           transform: "rotate(-90 12 " + (M.t + H - M.b) / 2 + ")" }, yLabel));
    for (const line of series) {
      const pts = line.points.filter(p => !missing(p[1]));
      const g = svg("g", { class: "series", "data-name": line.name });
      if (pts.length > 1) g.append(svg("polyline", { points: pts.map(p => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" "),
                                                     fill: "none", stroke: line.colour, "stroke-width": 1.6 }));
      for (const p of pts) {
        const dot = svg("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.6, fill: line.colour });
        dot.append(svg("title", {}, line.name + ": " + fmt(p[1]) + " at " + p[0].toLocaleString("en") + " tokens"));
        g.append(dot);
      }
      s.append(g);
    }
    const legend = el("div", { class: "legend" });
    for (const line of series) legend.append(el("span", {}, el("i", { style: "background:" + line.colour }), line.name));
    return el("figure", { class: "chart-box" }, s, legend);
  }
  const emergenceBody = document.getElementById("emergence-body");
  const measure = document.getElementById("emergence-measure");
  function drawEmergence() {
    const key = measure.value, parts = [];
    for (const suite of Object.keys(D.suites)) {
      const names = D.suites[suite].capabilities.map(c => c.name);
      const series = names.map((name, i) => ({ name: name, colour: COLOURS[i % COLOURS.length],
        points: D.emergence.map(r => [r.tokens, ((r[suite] || {})[name] || {})[key]]) }));
      parts.push(chart(suite + " suite", series, D.measures[key], key === "top1" ? [0, 1] : null));
    }
    if (D.formation) parts.push(chart("head formation (heads stage)", [
      { name: "best previous-token (stories)", colour: COLOURS[0], points: D.formation.map(r => [r.tokens, r.best_previous_token]) },
      { name: "best induction (R + R)", colour: COLOURS[1], points: D.formation.map(r => [r.tokens, r.best_induction]) }],
      "score", [0, 1]));
    emergenceBody.replaceChildren(...parts);
  }
  if (emergenceBody) {
    for (const key of Object.keys(D.measures)) measure.append(el("option", { value: key, text: D.measures[key] }));
    measure.addEventListener("change", drawEmergence);
    drawEmergence();
  }

  // --- mining ---------------------------------------------------------------------------------
  const miningTable = document.getElementById("mining-table");
  if (miningTable && D.mining) {
    const Mi = D.mining, final = Mi.final, middle = Mi.middle;
    const head = miningTable.tHead.rows[0];
    const names = ["rule", "final model"].concat(middle ? ["step " + middle.step, "gained after it"] : []);
    for (const n of names) head.append(el("th", { text: n }));
    const body = miningTable.tBodies[0];
    const share = v => {
      const td = el("td", { class: "num share" }, el("span", { class: "bar", style: "width:" + Math.round(100 * (v || 0)) + "px" }),
                    el("span", { text: missing(v) ? "\u2013" : (100 * v).toFixed(1) + "%" }));
      return td;
    };
    for (const rule of Object.keys(final.shares)) {
      const tr = el("tr", { "data-rule": rule, class: rule === "unexplained" ? "unexplained" : "" },
                    el("td", { text: rule }), share(final.shares[rule]));
      if (middle) tr.append(share(middle.shares[rule]), share(middle.gained_by_final[rule]));
      body.append(tr);
    }
    const total = el("tr", { class: "total" }, el("td", { text: "confident tokens (share of all)" }), share(final.confident_share));
    if (middle) total.append(share(middle.confident_share), el("td", { class: "num", text: middle.gained_by_final.tokens.toLocaleString("en") + " tokens" }));
    body.append(total);
    const rule = document.getElementById("mining-rule"), model = document.getElementById("mining-model");
    const rules = Object.keys(final.examples);
    rules.sort((a, b) => (b === "unexplained") - (a === "unexplained"));  // the unexplained bucket first
    for (const r of rules) rule.append(el("option", { value: r, text: r }));
    model.append(el("option", { value: "final", text: "the final model" }));
    if (middle) model.append(el("option", { value: "middle", text: "the snapshot at step " + middle.step }));
    const list = document.getElementById("mining-examples");
    function drawExamples() {
      const source = model.value === "middle" ? middle : final, ex = source.examples[rule.value] || [];
      const lines = ex.map(x => el("div", { class: "ex" }, el("span", { class: "ctx", text: "\u2026" + visible(x.context) }),
                                    el("span", { class: "q", text: visible(x.token) }), el("span", { class: "w", text: "p = " + fmt(x.prob) })));
      if (!lines.length) lines.push(el("p", { class: "note", text: "No confident token under this rule." }));
      list.replaceChildren(...lines);
    }
    rule.addEventListener("change", drawExamples);
    model.addEventListener("change", drawExamples);
    drawExamples();
  }

  // --- models side by side ------------------------------------------------------------------------
  const modelsBody = document.getElementById("models-body");
  if (modelsBody) {
    const names = Object.keys(D.models);
    const source = n => D.model_sources[n];
    for (const suite of Object.keys(D.suites)) {
      const head = el("tr", {}, el("th", { text: "capability" }));
      for (const n of names) {
        const s = source(n);
        head.append(el("th", { text: n, title: s ? s.kind + ", " + s.parameters.toLocaleString("en") + " parameters, n_ctx " + s.n_ctx : "the run's own LM" }));
      }
      const body = el("tbody");
      for (const c of D.suites[suite].capabilities) {
        const tr = el("tr", {}, el("td", { text: c.name }));
        for (const n of names) {
          const row = ((D.models[n] || {})[suite] || {})[c.name];
          tr.append(el("td", { class: "num", title: row ? "mean p " + fmt(row.mean_prob) : "not scored", text: row ? fmt(row.top1) : "\u2013" }));
        }
        body.append(tr);
      }
      modelsBody.append(el("h3", { text: suite + " suite: top-1" }),
                        el("div", { class: "table-wrap" }, el("table", { class: "models" }, el("thead", {}, head), body)));
    }
    // the mining of each model that shares the run's tokenizer (so the same windows), and
    // what the larger of the two gets right that the smaller does not
    const mined = (D.mining && D.mining.models) || {};
    const minedNames = Object.keys(mined);
    if (minedNames.length) {
      const rules = Object.keys(D.mining.final.shares);
      const head = el("tr", {}, el("th", { text: "rule" }), el("th", { text: "this run" }));
      for (const n of minedNames) head.append(el("th", { text: n }), el("th", { text: mined[n].larger + " gains over " + mined[n].smaller }));
      const body = el("tbody");
      const share = v => el("td", { class: "num", text: (100 * v).toFixed(1) + "%" });
      for (const rule of rules) {
        const tr = el("tr", {}, el("td", { text: rule }), share(D.mining.final.shares[rule]));
        for (const n of minedNames) tr.append(share(mined[n].shares[rule]), share(mined[n].gained_by_larger[rule]));
        body.append(tr);
      }
      const total = el("tr", {}, el("td", { text: "confident tokens" }), share(D.mining.final.confident_share));
      for (const n of minedNames) total.append(share(mined[n].confident_share), el("td", { class: "num", text: mined[n].gained_by_larger.tokens.toLocaleString("en") + " tokens" }));
      body.append(total);
      modelsBody.append(el("h3", { text: "Mining, models with the run's tokenizer" }),
                        el("div", { class: "table-wrap" }, el("table", { class: "models mining-models" }, el("thead", {}, head), body)));
    } else if (names.length > 1) {
      modelsBody.append(el("p", { class: "note", text: "No other model shares this run's tokenizer, so none is mined on the same windows." }));
    }
  }

  if (!fromHash()) {
    const first = Object.keys(D.suites).find(s => D.suites[s].capabilities.length);
    if (first) openCapability(first, D.suites[first].capabilities[0].name);
  }
  document.body.dataset.ready = "1";
})();
