// The status page: polls the API about once a second and updates only the rows whose
// group changed, so 1,000 groups cost a string comparison each, not a DOM rebuild.
"use strict";
const POLL_MS = 1000;
const HISTORY_LIMIT = 100;
const rows = new Map(); // group name -> {el, key}
const $ = (id) => document.getElementById(id);
const stats = { polls: 0, firstRenderMs: null, lastRenderMs: 0, maxRenderMs: 0, rowsUpdated: 0, bytes: 0 };
window.pageStats = stats;
let pending = null; // an action waiting for a token
let filterText = "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function headers() {
  const token = sessionStorage.getItem("api_token");
  return token ? { Authorization: "Bearer " + token } : {};
}
function ms(n) {
  if (n === undefined || n === null) return "";
  return n >= 10000 ? (n / 1000).toFixed(1) + " s" : Math.round(n) + " ms";
}
function when(t) {
  return t ? new Date(t).toLocaleString() : "";
}
function notice(text, isError) {
  const n = $("notice");
  n.hidden = !text;
  n.textContent = text || "";
  n.className = isError ? "error" : "";
}
function askToken(why) {
  $("auth").hidden = false;
  $("auth-why").textContent = why || "";
  $("token").focus();
}

async function get(path) {
  const r = await fetch(path, { headers: headers(), cache: "no-store" });
  const body = await r.text();
  if (r.status === 401) {
    const e = new Error(body.trim());
    e.status = 401;
    throw e;
  }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + body.trim());
  stats.bytes += body.length;
  return JSON.parse(body);
}

async function poll() {
  try {
    stats.bytes = 0;
    const [groups, cluster, history] = await Promise.all([
      get("/api/v1/groups"),
      get("/api/v1/cluster"),
      get("/api/v1/history?limit=" + HISTORY_LIMIT),
    ]);
    const started = performance.now();
    render(groups, cluster, history);
    stats.lastRenderMs = performance.now() - started;
    if (stats.firstRenderMs === null) stats.firstRenderMs = stats.lastRenderMs;
    else stats.maxRenderMs = Math.max(stats.maxRenderMs, stats.lastRenderMs);
    stats.polls++;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("cost").textContent = "Last poll: " + Math.round(stats.bytes / 1024) + " KiB, rendered in " +
      stats.lastRenderMs.toFixed(1) + " ms (" + stats.rowsUpdated + (stats.rowsUpdated === 1 ? " row" : " rows") + " changed).";
    if ($("notice").textContent.startsWith("cannot reach")) notice("");
  } catch (e) {
    if (e.status === 401) askToken(e.message);
    else notice("cannot reach the daemon: " + e.message, true);
  }
  setTimeout(poll, POLL_MS);
}

function stateOf(g) {
  if (g.state === "ok" && g.blocked) return "blocked";
  if (g.state === "ok" && g.paused) return "paused";
  return g.state;
}

function render(groups, cluster, history) {
  renderCluster(cluster);
  const past = new Map();
  for (const r of history) {
    const list = past.get(r.group) || [];
    if (list.length < 3) list.push(r);
    past.set(r.group, list);
  }
  const counts = {};
  const seen = new Set();
  const box = $("groups");
  let updated = 0;
  let before = null;
  for (let i = groups.length - 1; i >= 0; i--) {
    const g = groups[i];
    seen.add(g.name);
    const s = stateOf(g);
    counts[s] = (counts[s] || 0) + 1;
    const mine = past.get(g.name) || [];
    const key = JSON.stringify(g) + JSON.stringify(mine);
    let row = rows.get(g.name);
    if (!row) {
      row = { el: el("div", "group"), key: "" };
      rows.set(g.name, row);
      box.insertBefore(row.el, before);
      applyFilter(row.el, g.name);
    }
    if (row.key !== key) {
      fillRow(row.el, g, mine);
      row.key = key;
      updated++;
    }
    before = row.el;
  }
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.el.remove();
      rows.delete(name);
    }
  }
  stats.rowsUpdated = updated;
  const parts = Object.keys(counts).sort().map((k) => counts[k] + " " + k);
  $("summary").textContent = groups.length + " groups" + (parts.length ? ": " + parts.join(", ") : "");
  renderHistory(history);
  showCount();
}

function fillRow(row, g, past) {
  const s = stateOf(g);
  row.className = "group s-" + s;
  row.dataset.name = g.name;
  row.replaceChildren();
  const head = el("div");
  head.append(el("div", "name", g.name));
  head.append(el("span", "badge " + g.state, g.state.replace("_", " ")));
  if (g.paused) {
    const until = g.paused.until_ms ? " until " + new Date(g.paused.until_ms).toLocaleTimeString() : "";
    head.append(el("span", "badge paused", "paused" + until));
  }
  if (g.blocked) head.append(el("span", "badge blocked", "blocked"));
  if (g.tilt) head.append(el("span", "badge suspect", "tilt"));
  if (g.down_votes) head.append(el("span", "badge down", g.down_votes + " down vote" + (g.down_votes > 1 ? "s" : "")));
  row.append(head);

  const mid = el("div");
  const topo = el("div", "topo");
  const bad = !["ok", "switching_over", "follower"].includes(g.state) || g.disconnected;
  const m = el("span", "node master addr" + (bad ? " bad" : ""), g.master);
  m.append(el("small", null, "master"));
  topo.append(m);
  const reps = g.replicas || [];
  if (reps.length) topo.append(el("span", "arrow", "→"));
  const ahead = reps.reduce((a, r) => Math.max(a, r.offset), 0);
  for (const r of reps) {
    const n = el("span", "node addr" + (r.link === "up" ? "" : " link-down"), r.addr);
    const lag = ahead - r.offset;
    n.append(el("small", null, "link " + r.link + ", lag " + lag + " B" +
      (r.priority === null || r.priority === undefined ? "" : ", prio " + r.priority)));
    topo.append(n);
  }
  mid.append(topo);
  const why = g.blocked || g.reason || g.last_error;
  if (why && g.state !== "ok") mid.append(el("div", "why", why));
  else if (g.blocked) mid.append(el("div", "why", "blocked: " + g.blocked));
  if (past.length) {
    const p = el("div", "past");
    p.textContent = "failovers: " + past.map((r) =>
      when(r.started_at_ms) + " " + (r.kind || "failover") + " " + r.outcome +
      (r.new_master ? " → " + r.new_master : "") + " in " + ms(r.duration_ms)).join("; ");
    mid.append(p);
  }
  row.append(mid);

  const act = el("div", "actions");
  const path = "/api/v1/groups/" + encodeURIComponent(g.name);
  if (g.paused) act.append(button("resume", "DELETE", path + "/pause"));
  else act.append(button("pause", "POST", path + "/pause"));
  if (g.blocked || g.state === "blocked") act.append(button("ack", "POST", path + "/ack"));
  act.append(button("switchover", "POST", path + "/switchover",
    "Move the master of " + g.name + " to a replica (no acknowledged write lost)?"));
  row.append(act);
}

function button(label, method, path, confirmText) {
  const b = el("button", null, label);
  b.dataset.action = label;
  b.addEventListener("click", () => {
    if (confirmText && !window.confirm(confirmText)) return;
    act(method, path, label);
  });
  return b;
}

// No body and no form content type: a plain same-origin request, with the token (if
// any) in the Authorization header, never in a cookie.
async function act(method, path, label) {
  notice(label + "…");
  try {
    const r = await fetch(path, { method, headers: headers(), cache: "no-store" });
    const body = (await r.text()).trim();
    if (r.status === 401) {
      pending = () => act(method, path, label);
      askToken(body);
      notice("");
      return;
    }
    notice(label + ": " + (r.ok ? "done" : r.status + " " + body), !r.ok);
  } catch (e) {
    notice(label + ": " + e.message, true);
  }
}

function renderCluster(c) {
  const box = $("cluster");
  box.replaceChildren();
  const leaderId = c.leader ? c.leader.id : null;
  box.append(el("span", "muted", c.broker + (c.term !== null && c.term !== undefined ? " (term " + c.term + ")" : "") + ":"));
  const peers = c.peers && c.peers.length ? c.peers : [{ id: c.id || "this", http_addr: c.http_addr, this_node: true }];
  for (const p of peers) {
    const isLeader = (leaderId && p.id === leaderId) || (!leaderId && p.this_node && c.role === "leader");
    const d = el("span", "daemon" + (isLeader ? " leader" : "") + (p.this_node ? " me" : ""));
    d.textContent = (p.http_addr || p.raft_addr || p.id) + (isLeader ? " (leader)" : "") + (p.this_node ? " (this page)" : "");
    box.append(d);
  }
  if (!leaderId && c.role !== "leader") box.append(el("span", "badge down", "no leader"));
  if (c.zk_session && c.zk_session !== "connected") box.append(el("span", "badge suspect", "zk " + c.zk_session));
  if (c.error) box.append(el("span", "why", c.error));
}

let historyKey = "";
function renderHistory(history) {
  const top = history.slice(0, 20);
  const key = JSON.stringify(top);
  if (key === historyKey) return;
  historyKey = key;
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const r of top) {
    const tr = el("tr");
    tr.append(el("td", null, when(r.started_at_ms)));
    tr.append(el("td", null, r.group));
    tr.append(el("td", null, r.kind || "failover"));
    tr.append(el("td", "addr", r.old_master + " → " + (r.new_master || "–")));
    tr.append(el("td", "outcome-" + r.outcome, r.outcome + (r.count > 1 ? " ×" + r.count : "")));
    tr.append(el("td", null, ms(r.duration_ms)));
    const why = el("td", null, r.reason || "");
    if (r.steps && r.steps.length) {
      const d = el("details");
      d.append(el("summary", null, r.steps.length + " steps"));
      for (const s of r.steps) d.append(el("div", "muted", "+" + ms(s.at_ms) + " " + s.name + " (" + ms(s.took_ms) + ")" + (s.detail ? ": " + s.detail : "")));
      why.append(d);
    }
    tr.append(why);
    body.append(tr);
  }
}

function applyFilter(row, name) {
  row.hidden = filterText !== "" && !name.toLowerCase().includes(filterText);
}
function showCount() {
  let shown = 0;
  for (const row of rows.values()) if (!row.el.hidden) shown++;
  $("shown").textContent = filterText ? shown + " of " + rows.size + " shown" : "";
}

function onFilter(e) {
  filterText = e.target.value.trim().toLowerCase();
  for (const [name, row] of rows) applyFilter(row.el, name);
  showCount();
}
for (const event of ["input", "change", "search"]) $("filter").addEventListener(event, onFilter);
$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("api_token", $("token").value);
  $("token").value = "";
  $("auth").hidden = true;
  if (pending) {
    const again = pending;
    pending = null;
    again();
  }
});
poll();
