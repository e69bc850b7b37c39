// The docs page: reads openapi.json and lists every operation, grouped by
// tag, each with its parameters, body and answers (schemas shown as JSON,
// references expanded once). No network beyond this edge.
"use strict";
(function () {
  const methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
  const $ = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  };
  let doc;
  // expand inlines $refs, each at most once along a path (recursion shows
  // as the reference).
  function expand(s, seen) {
    if (!s || typeof s !== "object") return s;
    if (Array.isArray(s)) return s.map((x) => expand(x, seen));
    if (s.$ref) {
      const name = s.$ref.replace("#/components/schemas/", "");
      if (seen.has(name)) return { $ref: s.$ref };
      const target = doc.components && doc.components.schemas && doc.components.schemas[name];
      return target ? expand(target, new Set([...seen, name])) : s;
    }
    const out = {};
    for (const [k, v] of Object.entries(s)) out[k] = expand(v, seen);
    return out;
  }
  const schemaBlock = (s) => $("pre", {}, JSON.stringify(expand(s, new Set()), null, 2));
  function content(c) {
    const out = [];
    for (const [type, media] of Object.entries(c || {})) {
      out.push($("div", {}, $("code", {}, type)), schemaBlock(media.schema));
    }
    return out;
  }
  function operation(path, method, op) {
    const sec = $("details", { class: "op", id: op.operationId || method + " " + path, "data-path": path, "data-method": method.toUpperCase() });
    const head = $("summary", {},
      $("span", { class: "method " + method.toUpperCase() }, method.toUpperCase()),
      $("span", { class: "path" }, path),
      $("span", {}, op.summary || ""));
    if (op.security && op.security.some((r) => Object.keys(r).length > 0)) {
      head.append($("span", { class: "lock", title: "needs a credential" }, "🔒 " + op.security.map((r) => Object.keys(r).join("+") || "none").join(" | ")));
    }
    head.append($("span", { class: "opid" }, op.operationId || ""));
    sec.append(head);
    const body = $("div", { class: "body" });
    if (op.description) body.append($("p", {}, op.description));
    if (op.parameters && op.parameters.length) {
      const t = $("table", {}, $("tr", {}, $("th", {}, "parameter"), $("th", {}, "in"), $("th", {}, "type"), $("th", {}, "")));
      for (const p of op.parameters) {
        const s = expand(p.schema || {}, new Set());
        t.append($("tr", {}, $("td", {}, $("code", {}, p.name)), $("td", {}, p.in + (p.required ? ", required" : "")),
          $("td", {}, $("code", {}, [].concat(s.type || "").join(" | ") + (s.format ? " (" + s.format + ")" : ""))),
          $("td", {}, p.description || "")));
      }
      body.append($("h4", {}, "Parameters"), t);
    }
    if (op.requestBody) body.append($("h4", {}, "Body"), ...content(op.requestBody.content));
    for (const [code, r] of Object.entries((op.responses || {}))) {
      body.append($("h4", {}, (code === "default" ? "Otherwise" : code) + ": " + (r.description || "")), ...content(r.content));
    }
    sec.append(body);
    return sec;
  }
  function render() {
    document.getElementById("title").textContent = (doc.info && doc.info.title) || "API documentation";
    document.getElementById("description").textContent = (doc.info && doc.info.description) || "";
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const m of methods) {
        if (!item[m]) continue;
        const tag = (item[m].tags && item[m].tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operation(path, m, item[m]));
      }
    }
    const main = document.getElementById("ops");
    main.textContent = "";
    for (const tag of [...byTag.keys()].sort()) {
      main.append($("h2", { class: "tag" }, tag), ...byTag.get(tag));
    }
    main.setAttribute("data-ready", String([...byTag.values()].reduce((n, l) => n + l.length, 0)));
  }
  document.getElementById("filter").addEventListener("input", (ev) => {
    const q = ev.target.value.toLowerCase();
    for (const s of document.querySelectorAll("details.op")) {
      s.hidden = q !== "" && !s.textContent.toLowerCase().includes(q);
    }
  });
  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then((r) => { if (!r.ok) throw new Error("openapi.json: " + r.status); return r.json(); })
    .then((d) => { doc = d; render(); })
    .catch((e) => { document.getElementById("status").textContent = "The document could not be read: " + e.message; });
})();
