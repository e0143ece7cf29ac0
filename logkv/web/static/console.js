// The logkv console's only script, served from the console itself (the pages allow no inline
// script). The pages are rendered by the server and work without it; with it, the key list's
// filter and paging, a timeline's paging and the diff of two chosen versions are fetched from
// the JSON API (/api/...) and drawn in place. Data is only ever set as text (textContent,
// attributes of elements made here), never parsed as HTML.
"use strict";

// ------------------------------------------------------------------ helpers

function make(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "text") {
      node.textContent = value;
    } else if (name === "class") {
      node.className = value;
    } else {
      node.setAttribute(name, value);
    }
  }
  node.append(...children);
  return node;
}

function cell(text, className) {
  return make("td", className ? { class: className, text } : { text });
}

function link(href, text, rel) {
  return make("a", rel ? { href, text, rel } : { href, text });
}

function encoded(params) {
  const pairs = Object.entries(params).filter(([, value]) => value !== null && value !== undefined);
  return new URLSearchParams(pairs).toString();
}

function number(n) {
  return n === null || n === undefined ? "" : n.toLocaleString("en-US");
}

const UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

function bytes(size) {
  if (size === null || size === undefined) {
    return "";
  }
  let i = 0;
  while (i < UNITS.length - 1 && Math.abs(size) >= 1024 ** (i + 1)) {
    i += 1;
  }
  return i === 0 ? `${size} bytes` : `${(size / 1024 ** i).toFixed(1)} ${UNITS[i]}`;
}

async function fetchJSON(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

// A line under ``anchor`` that says what went wrong with the last request (empty: nothing).
function problemLine(anchor) {
  const line = make("p", { class: "error", role: "alert" });
  line.hidden = true;
  anchor.after(line);
  return (error) => {
    line.hidden = !error;
    line.textContent = error ? `Could not load: ${error.message}` : "";
  };
}

// Runs ``load`` for the latest request only: an answer to an older one is dropped.
function latestOnly(load, report) {
  let asked = 0;
  return async (...args) => {
    const ticket = ++asked;
    try {
      const data = await load(...args);
      if (ticket === asked) {
        report(null);
        return data;
      }
    } catch (error) {
      if (ticket === asked) {
        report(error);
      }
    }
    return null;
  };
}

// ------------------------------------------------------------------ a store's keys

function keyList(form) {
  const api = form.dataset.api;
  const base = form.dataset.base;
  const limit = form.dataset.limit;
  const input = form.querySelector("input[name=prefix]");
  const rows = document.getElementById("keys");
  const matching = document.getElementById("matching");
  const pager = document.getElementById("keys-pager");
  const report = problemLine(form);

  function row(k) {
    const record = `${base}/record?${encoded({ key: k.key })}`;
    const history = `${base}/history?${encoded({ key: k.key })}`;
    return make(
      "tr", {},
      make("td", { class: "key" }, link(record, k.key)),
      cell(k.content_type || ""),
      cell(k.is_none ? "None" : bytes(k.size), "n"),
      cell(number(k.seq), "n"),
      cell(k.modified || "-"),
      make("td", {}, link(history, "history")),
    );
  }

  function draw(data) {
    const drawn = data.keys.map(row);
    if (!drawn.length) {
      const text = data.prefix ? "no keys with this prefix" : "no keys";
      drawn.push(make("tr", {}, make("td", { colspan: "6", class: "note", text })));
    }
    rows.replaceChildren(...drawn);
    matching.textContent =
      `${number(data.matching)} key(s)` + (data.prefix ? " start with this prefix" : "");
    const links = [];
    if (data.after) {
      links.push(link(`${base}?${encoded({ prefix: data.prefix })}`, "first page"));
    }
    if (data.next) {
      links.push(link(`${base}?${encoded({ prefix: data.prefix, after: data.next })}`,
                      "next page", "next"));
    }
    pager.replaceChildren(...links);
  }

  const load = latestOnly(async (prefix, after) => {
    const data = await fetchJSON(`${api}?${encoded({ prefix, after, limit })}`);
    draw(data);
    window.history.replaceState(null, "", `${base}?${encoded({ prefix, after })}`);
    return data;
  }, report);

  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(input.value, null), 200);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    load(input.value, null);
  });
  pager.addEventListener("click", (event) => {
    const target = event.target.closest("a");
    if (!target || event.ctrlKey || event.metaKey || event.shiftKey) {
      return; // a new tab gets the server-rendered page
    }
    event.preventDefault();
    const params = new URL(target.href).searchParams;
    input.value = params.get("prefix") || "";
    load(input.value, params.get("after"));
  });
}

// ------------------------------------------------------------------ a key's timeline

function diffClass(line) {
  if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("@@")) {
    return "hunk";
  }
  if (line.startsWith("+")) {
    return "add";
  }
  return line.startsWith("-") ? "del" : "ctx";
}

function timeline(form) {
  const api = form.dataset.api;
  const base = form.dataset.base;
  const key = form.dataset.key;
  const limit = Number(form.dataset.limit);
  let offset = Number(form.dataset.offset);
  const rows = document.getElementById("changes");
  const pager = document.getElementById("history-pager");
  const section = document.getElementById("diff");
  const report = problemLine(form.querySelector(".bar"));
  const chosen = {
    a: form.querySelector("input[name=a]:checked")?.value ?? null,
    b: form.querySelector("input[name=b]:checked")?.value ?? null,
  };

  form.addEventListener("change", (event) => {
    if (event.target.name === "a" || event.target.name === "b") {
      chosen[event.target.name] = event.target.value;
    }
  });

  function radio(name, seq) {
    const input = make("input", { type: "radio", name, value: String(seq) });
    input.checked = chosen[name] === String(seq);
    return make("td", {}, input);
  }

  function row(c) {
    const view = make("td", {});
    if (c.op === "set") {
      view.append(link(`${base}/record?${encoded({ key, seq: c.seq })}`, "view"));
    }
    return make(
      "tr", { class: `op-${c.op}` },
      radio("a", c.seq), radio("b", c.seq),
      cell(String(c.seq), "n"), cell(c.time || ""), cell(c.op),
      cell(c.size === null ? "" : bytes(c.size), "n"),
      cell(c.content_type || ""), cell(c.source),
      view,
    );
  }

  function here(extra) {
    return `${base}/history?${encoded({ key, offset: offset || null, ...extra })}`;
  }

  function drawPager(total) {
    const links = [];
    if (offset > 0) {
      links.push(link(`${base}/history?${encoded({ key, offset: Math.max(offset - limit, 0) })}`,
                      "earlier"));
    }
    if (offset + limit < total) {
      links.push(link(`${base}/history?${encoded({ key, offset: offset + limit })}`, "later"));
    }
    pager.replaceChildren(...links);
  }

  const page = latestOnly(async (at) => {
    const data = await fetchJSON(`${api}/history?${encoded({ key, offset: at, limit })}`);
    offset = data.offset;
    rows.replaceChildren(...data.changes.map(row));
    drawPager(data.total);
    const kept = form.querySelector("input[name=offset]");
    if (kept) {
      kept.value = String(offset);
    }
    window.history.replaceState(null, "", here({}));
    return data;
  }, report);

  function drawDiff(data) {
    const parts = [
      make("h2", { text: `Diff: seq ${number(data.a.seq)} (${data.a.op}) → seq ` +
                         `${number(data.b.seq)} (${data.b.op})` }),
    ];
    if (data.note) {
      parts.push(make("p", { class: "note", text: data.note }));
    }
    if (data.lines.length) {
      parts.push(make("pre", { class: "diff" },
                      ...data.lines.map((line) => make("span", { class: diffClass(line), text: line }))));
    }
    if (data.truncated) {
      parts.push(make("p", { class: "note", text: "The diff is cut short." }));
    }
    section.replaceChildren(...parts);
    section.hidden = false;
  }

  const diff = latestOnly(async (a, b) => {
    const data = await fetchJSON(`${api}/diff?${encoded({ key, a, b })}`);
    drawDiff(data);
    window.history.replaceState(null, "", here({ a, b }));
    return data;
  }, report);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (chosen.a === null || chosen.b === null) {
      report(new Error("choose one version in column a and one in b"));
      return;
    }
    diff(chosen.a, chosen.b);
  });
  pager.addEventListener("click", (event) => {
    const target = event.target.closest("a");
    if (!target || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;
    }
    event.preventDefault();
    page(Number(new URL(target.href).searchParams.get("offset") || 0));
  });
}

// ------------------------------------------------------------------ a JSON tree

function treeButtons() {
  for (const button of document.querySelectorAll("button[data-tree]")) {
    button.addEventListener("click", () => {
      const open = button.dataset.tree === "open";
      for (const node of document.querySelectorAll(".tree details")) {
        node.open = open;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  treeButtons();
  const filter = document.getElementById("filter");
  if (filter && filter.dataset.api) {
    keyList(filter);
  }
  const changes = document.getElementById("timeline");
  if (changes && changes.dataset.api) {
    timeline(changes);
  }
});
