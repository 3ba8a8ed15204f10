/* The head catalogue's one script (report/heads_page.py writes the data it reads). It
   draws the sortable table of heads, the open head's panel (#L1H2 in the address opens
   it: description, ablations, examples, its patterns) and every layer's patterns with
   CircuitsVis. Text from the run goes into the page only as text (textContent, text
   nodes), never as markup. No template syntax in here: the page includes this file
   through Jinja. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("heads-data").textContent);
  const CV = D.has_circuitsvis && typeof CircuitsVis !== "undefined" ? CircuitsVis : null;
  let widgets = 0;  // a fresh element for every widget: CircuitsVis renders into it once

  function fmt(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
    if (typeof x !== "number") return String(x);
    if (!Number.isFinite(x)) return String(x);
    const a = Math.abs(x);
    if (x !== 0 && a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(3)));
  }
  function widget(component, props) {
    const id = "cv-widget-" + (widgets++);
    const div = el("div", { id: id, class: "cv" });
    return { div: div, draw: () => CV.render(id, component, props) };
  }

  // --- the table -----------------------------------------------------------------------------
  const table = document.getElementById("head-table");
  const headRow = table.tHead.rows[0], tbody = table.tBodies[0];
  const columns = [{ key: "order", name: "head", title: "layer and head" },
                   { key: "labels", name: "labels", title: "the catalogue's labels (interpret/catalogue.py)" }]
    .concat(D.columns.map((c, i) => ({ key: "v" + i, name: c.name, title: c.title, index: i })));
  const rows = D.heads.map((h, i) => ({ h: h, order: i, labels: h.labels.map(l => l[0]).join(", ") }));
  const sort = { key: "order", dir: 1 };
  for (const c of columns) {
    const th = el("th", { "data-key": c.key, title: c.title, text: c.name });
    th.addEventListener("click", () => {
      if (sort.key === c.key) sort.dir = -sort.dir;
      else { sort.key = c.key; sort.dir = c.index === undefined ? 1 : -1; }
      draw();
    });
    headRow.append(th);
  }
  function value(r, key) {
    if (key === "order") return r.order;
    if (key === "labels") return r.labels;
    return r.h.values[Number(key.slice(1))];
  }
  function compare(a, b) {
    const x = value(a, sort.key), y = value(b, sort.key);
    const missX = x === null || x === "", missY = y === null || y === "";
    if (missX || missY) return missX === missY ? a.order - b.order : missX ? 1 : -1;  // missing last
    if (x < y) return -sort.dir;
    if (x > y) return sort.dir;
    return a.order - b.order;
  }
  let selected = null;
  function draw() {
    const sorted = rows.slice().sort(compare);
    const body = document.createDocumentFragment();
    for (const r of sorted) {
      const tr = el("tr", { "data-head": r.h.head, title: r.h.description },
                    el("td", { text: r.h.head }), el("td", { class: "labels", text: r.labels || "\u2013" }));
      for (const v of r.h.values) tr.append(el("td", { class: "num", text: fmt(v) }));
      if (r.h.head === selected) tr.classList.add("selected");
      body.append(tr);
    }
    tbody.replaceChildren(body);
    for (const th of headRow.cells) {
      th.classList.toggle("asc", th.dataset.key === sort.key && sort.dir > 0);
      th.classList.toggle("desc", th.dataset.key === sort.key && sort.dir < 0);
    }
  }
  tbody.addEventListener("click", e => {
    const tr = e.target.closest("tr");
    if (tr) location.hash = "#" + tr.dataset.head;
  });

  // --- the open head ---------------------------------------------------------------------------
  const panel = document.getElementById("panel");
  function ablationTable(i) {
    const A = D.ablation, head = el("tr", {}, el("th", { text: "" }));
    for (const name of A.group_names) head.append(el("th", { text: name }));
    const body = el("tbody");
    for (const mode of Object.keys(A.modes)) {
      const m = A.modes[mode];
      const clean = el("tr", {}, el("td", { text: mode + ": clean loss" }));
      const delta = el("tr", {}, el("td", { text: mode + "-ablated: change" }));
      m.clean.forEach(v => clean.append(el("td", { class: "num", text: fmt(v) })));
      m.delta[i].forEach(v => delta.append(el("td", { class: "num", text: (v > 0 ? "+" : "") + fmt(v) })));
      body.append(clean, delta);
    }
    return el("table", { class: "ablation" }, el("thead", {}, head), body);
  }
  function example(x) {
    const line = el("div", { class: "ex" });
    if (x.key_at === null) line.append(el("span", { class: "far", text: "key " + x.back + " back: " }),
                                       el("span", { class: "k", text: x.key_token }), el("span", { class: "far", text: " \u2026" }));
    x.tokens.forEach((t, j) => {
      const cls = j === x.at ? (j === x.key_at ? "q k" : "q") : j === x.key_at ? "k" : "tok";
      line.append(el("span", { class: cls, text: t }));
    });
    const what = D.examples.measure === "attention" ? "" : D.examples.measure + " " + fmt(x.value) + ", ";
    line.append(el("span", { class: "w", text: what + "weight " + fmt(x.weight) + " on " + JSON.stringify(x.key_token)
                                               + " (" + x.back + " back), story " + x.row + " position " + x.query }));
    return line;
  }
  function open(name) {
    const i = D.heads.findIndex(h => h.head === name);
    if (i < 0) return;
    const h = D.heads[i];
    selected = name;
    for (const tr of tbody.rows) tr.classList.toggle("selected", tr.dataset.head === name);
    const parts = [el("h3", { id: "panel-title", text: h.head }), el("p", { class: "description", text: h.description })];
    if (D.ablation) parts.push(el("h4", { text: "Ablations (next-token loss, nats)" }), ablationTable(i));
    D.columns.forEach((c, j) => {
      if (c.key === "patching") parts.push(el("p", { class: "note", text: "Patching its output from clean into corrupted (\""
        + D.patching_template + "\", the giver swapped) recovers " + fmt(h.values[j]) + " of the logit difference." }));
      if (c.key === "patching_repeated_name") parts.push(el("p", { class: "note", text: "On repeated-name pairs (\""
        + D.patching_repeated_name_template + "\", the first mention replaced) it recovers " + fmt(h.values[j]) + "." }));
      if (c.key === "study") parts.push(el("p", { class: "study", text: D.study_title + ": "
        + (h.values[j] === null ? "no description of this head" : h.values[j]) }));
    });
    if (D.examples) {
      const ex = D.examples.heads[i].examples;
      parts.push(el("h4", { text: "Where it is most active" }),
                 el("p", { class: "note", text: "By " + D.examples.measure_text + ": the query highlighted, the key it reads most outlined." }));
      const list = el("div", { id: "examples" });
      ex.forEach(x => list.append(example(x)));
      if (!ex.length) list.append(el("p", { class: "note", text: "No query scored." }));
      parts.push(list);
    }
    const draws = [];
    if (D.patterns.length) {
      parts.push(el("h4", { text: "Its patterns" }));
      const pair = el("div", { class: "pattern-pair", id: "head-patterns" });
      for (const p of D.patterns) {
        const box = el("div", {}, el("p", { class: "note", text: p.title }));
        if (CV) {
          const w = widget(CV.AttentionPattern, { attention: p.patterns[h.layer][h.index], tokens: p.tokens,
                                                  maskUpperTri: true, showAxisLabels: true });
          box.append(w.div);
          draws.push(w.draw);
        } else box.append(el("p", { class: "note", text: "CircuitsVis is not installed: no patterns drawn." }));
        pair.append(box);
      }
      parts.push(pair);
    }
    panel.replaceChildren(...parts);
    draws.forEach(d => d());
  }
  function route() {
    const name = decodeURIComponent(location.hash.slice(1));
    if (/^L\d+H\d+$/.test(name)) {
      open(name);
      document.getElementById("head").scrollIntoView();
    }
  }
  window.addEventListener("hashchange", route);

  // --- every layer's patterns ------------------------------------------------------------------
  const patterns = document.getElementById("patterns-body");
  if (patterns) {
    for (const p of D.patterns) {
      patterns.append(el("h3", { text: p.title }),
                      el("p", { class: "note" }, "Its first " + p.tokens.length + " tokens (with the start token) of: ",
                         el("code", { text: p.text })));
      for (let layer = 0; layer < D.n_layers; layer++) {
        patterns.append(el("h4", { text: "layer " + layer }));
        if (!CV) { patterns.append(el("p", { class: "note", text: "CircuitsVis is not installed: no patterns drawn." })); continue; }
        const names = [];
        for (let h = 0; h < D.n_heads; h++) names.push("L" + layer + "H" + h);
        const w = widget(CV.AttentionHeads, { attention: p.patterns[layer], tokens: p.tokens, maskUpperTri: true,
                                              attentionHeadNames: names });
        patterns.append(w.div);
        w.draw();
      }
    }
  }

  draw();
  const first = decodeURIComponent(location.hash.slice(1));
  open(/^L\d+H\d+$/.test(first) && D.heads.some(h => h.head === first) ? first : D.heads[0].head);
  document.body.dataset.ready = "1";
})();
