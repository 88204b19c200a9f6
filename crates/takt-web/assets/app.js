// takt's web UI: the little that must move without a reload. Local times on hover, live
// regions redrawn when the event log moves (Server-Sent Events from /ui/live), and job logs
// loaded by range then followed live (/ui/log/...). No framework, no build step.
"use strict";

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.title = d.toLocaleString() + " (local)";
  }
}

// ---- live regions: elements with data-live and an id are redrawn from a fresh copy ----
let refreshing = false, again = false, later = null;
// Every stream this page opened: closed when the page is left (a page kept in the back/forward
// cache would otherwise hold its connections, and browsers allow six per server).
const streams = new Set();
function stream(url) {
  const es = new EventSource(url);
  streams.add(es);
  return es;
}
addEventListener("pagehide", () => { for (const es of streams) es.close(); streams.clear(); });
addEventListener("pageshow", (e) => { if (e.persisted) location.reload(); });
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const r = await fetch(location.href, { credentials: "same-origin" });
    if (r.ok) {
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      let deferred = false;
      for (const el of document.querySelectorAll("[data-live][id]")) {
        const fresh = doc.getElementById(el.id);
        // Never under someone's hands: a region with focus or a half-filled field waits.
        const busy = el.contains(document.activeElement) && document.activeElement !== document.body
          || [...el.querySelectorAll("input[type=text], input[type=search]")].some((i) => i.value);
        if (busy) { deferred = true; continue; }
        if (fresh) { el.replaceWith(fresh); localTimes(fresh); }
      }
      if (deferred && !later) later = setTimeout(() => { later = null; refresh(); }, 2000);
      if (doc.body && doc.body.dataset.head) document.body.dataset.head = doc.body.dataset.head;
      document.dispatchEvent(new Event("takt:refreshed"));
    }
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

function live() {
  if (!document.querySelector("[data-live]")) return;
  const es = stream("/ui/live?after=" + encodeURIComponent(document.body.dataset.head || "0"));
  es.addEventListener("changed", refresh);
}

// ---- logs ----
const COLOURS = { 30: "k", 31: "r", 32: "g", 33: "y", 34: "b", 35: "m", 36: "c", 37: "w" };
function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}
// ANSI SGR colours and bold to spans; every other escape sequence is dropped.
function ansi(line, st) {
  let out = "", open = false;
  const parts = line.split(/\x1b\[([0-9;]*)m/);
  const style = () => (st.fg ? " ansi-" + st.fg : "") + (st.bold ? " ansi-bold" : "");
  for (let i = 0; i < parts.length; i++) {
    if (i % 2 === 1) {
      for (const c of (parts[i] || "0").split(";").map(Number)) {
        if (c === 0) { st.fg = null; st.bold = false; }
        else if (c === 1) st.bold = true;
        else if (c === 22) st.bold = false;
        else if (c === 39) st.fg = null;
        else if (COLOURS[c]) st.fg = COLOURS[c];
        else if (c >= 90 && c <= 97) st.fg = COLOURS[c - 60] + "b";
      }
      continue;
    }
    const text = parts[i].replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r(?!$)/g, "");
    if (!text) continue;
    const cls = style();
    out += cls ? '<span class="' + cls.trim() + '">' + escapeHtml(text) + "</span>" : escapeHtml(text);
  }
  return out;
}

function logView(box) {
  const pre = box.querySelector("pre.logtext");
  const job = box.dataset.job.replace(/[^A-Za-z0-9_-]/g, "_");
  const state = { n: 0, tail: "", st: { fg: null, bold: false }, loaded: false };
  const tail = document.createElement("span");
  tail.className = "line partial";
  function line(text) {
    state.n += 1;
    const id = "L" + job + "-" + state.n;
    const span = document.createElement("span");
    span.className = "line";
    span.id = id;
    span.innerHTML = '<a class="ln" href="#' + id + '" aria-label="line ' + state.n + '">' + state.n + "</a>" + ansi(text, state.st) + "\n";
    pre.insertBefore(span, tail);
  }
  function add(text) {
    const all = state.tail + text;
    const lines = all.split("\n");
    state.tail = lines.pop();
    for (const l of lines) line(l);
    tail.innerHTML = ansi(state.tail, { ...state.st });
    search();
  }
  const input = box.querySelector("input.logsearch");
  function search() {
    const q = (input && input.value || "").toLowerCase();
    for (const l of pre.querySelectorAll("span.line")) {
      const hit = q && l.textContent.toLowerCase().includes(q);
      l.classList.toggle("hit", !!hit);
      l.classList.toggle("dim", !!q && !hit);
    }
  }
  if (input) input.addEventListener("input", search);
  async function load() {
    if (state.loaded) return;
    state.loaded = true;
    pre.appendChild(tail);
    const url = box.dataset.log;
    let offset = 0, done = false;
    const r = await fetch(url, { headers: { Range: "bytes=-262144" }, credentials: "same-origin" });
    if (r.status === 200 || r.status === 206) {
      const range = /bytes (\d+)-(\d+)\/(\d+)/.exec(r.headers.get("content-range") || "");
      const text = await r.text();
      if (range && Number(range[1]) > 0) {
        const note = document.createElement("p");
        note.className = "muted";
        note.innerHTML = "Earlier output (" + range[1] + ' bytes) is in the <a href="' + url + '">raw log</a>.';
        pre.before(note);
      }
      offset = range ? Number(range[2]) + 1 : new TextEncoder().encode(text).length;
      done = r.headers.get("x-takt-log") === "complete";
      add(text);
    } else if (r.status === 416) {
      const m = /\*\/(\d+)/.exec(r.headers.get("content-range") || "");
      offset = m ? Number(m[1]) : 0;
      done = r.headers.get("x-takt-log") === "complete";
    }
    if (done) { finish(); return; }
    const es = stream(url + "?from=" + offset);
    es.onmessage = (e) => add(e.data);
    es.addEventListener("end", () => { es.close(); streams.delete(es); finish(); });
  }
  function finish() {
    if (state.tail) { line(state.tail); state.tail = ""; tail.innerHTML = ""; }
    box.dataset.complete = "true";
    search();
  }
  if (box.open) load();
  box.addEventListener("toggle", () => { if (box.open) load(); });
  if (location.hash.startsWith("#L" + job + "-") || location.hash === "#" + box.id) { box.open = true; }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  for (const box of document.querySelectorAll("details.log[data-log]")) logView(box);
  live();
});
