// Shared by the stand-alone pages (report/standalone.py), included before each page's own
// script in the same script element: el(tag, attrs, ...children) builds a DOM element;
// attrs.text sets its text and attrs.class its class, children that are not nodes become
// text nodes: text from a run set through it stays text, never markup.
function el(tag, attrs) {
  const e = document.createElement(tag);
  for (const k of Object.keys(attrs || {})) {
    if (k === "text") e.textContent = attrs[k];
    else if (k === "class") e.className = attrs[k];
    else e.setAttribute(k, attrs[k]);
  }
  for (let j = 2; j < arguments.length; j++) {
    const c = arguments[j];
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));  // strings become text nodes
  }
  return e;
}
