// HelpGrid big-screen console. Keeps a map of the community's incidents from the server's
// event stream (a snapshot, then every change) and redraws the board from it. The stream
// resumes by cursor (the event id) after any disconnect, so nothing is missed or doubled.
"use strict";

const incidents = new Map(); // id -> incident view, as the server sent it
const seenOverdue = new Set(); // ids already announced as overdue
// What the stream delivered; `repeats` counts updates the page already held (there should be
// none: the cursor resumes exactly after the last event).
window.helpgridConsole = { changes: 0, repeats: 0, snapshots: 0 };
let lastCursor = "";
// With ?area=: the area shown and its child areas; the per-grid table then counts per child.
const area = new URLSearchParams(location.search).get("area") || "";
let breakdown = null;
const childOfGrid = new Map(); // grid -> child area of the one shown
let source = null;
let soundOn = false;
let audio = null;

const $ = (id) => document.getElementById(id);

const STATE_LABEL = {
  waiting: "待派 waiting", assigned: "已派 assigned",
  acknowledged: "已响应 acknowledged", closed: "已办结 closed",
};
const KIND_LABEL = {
  Help: "求助 Help", Urgent: "紧急 Urgent", Medical: "医疗 Medical",
  Intrusion: "入侵 Intrusion", Fight: "斗殴 Fight", Fall: "跌倒 Fall", Fire: "火情 Fire",
  Crowd: "聚集 Crowd", Loitering: "徘徊 Loitering",
  "Device offline": "设备离线 Device offline", "Device silent": "设备无响应 Device silent",
  "Low battery": "电量低 Low battery", "Device maintenance": "设备维护 Device maintenance",
  "Disabled device pressed": "停用设备被按下 Disabled device pressed",
};
// Outcome codes (README "Outcome codes"), as the server names them.
const OUTCOME_LABEL = {
  resolved_on_spot: "当场解决 Resolved on the spot", mediated: "调解 Mediated",
  referred_to_town: "上报镇街 Referred to the town", referred_to_police: "移交公安 Referred to police",
  false_alarm: "误报 False alarm", nobody_there: "无人在场 Nobody there",
};
const PRIORITY_RANK = { critical: 3, high: 2, normal: 1 };

function connect() {
  const params = new URLSearchParams();
  if (area) params.set("area", area);
  if (lastCursor) params.set("cursor", lastCursor);
  const url = "events" + (params.toString() ? "?" + params.toString() : "");
  source = new EventSource(url);
  source.addEventListener("open", () => setLink("live", "实时 live"));
  source.addEventListener("snapshot", (e) => {
    const snapshot = JSON.parse(e.data);
    lastCursor = e.lastEventId;
    window.helpgridConsole.snapshots += 1;
    incidents.clear();
    for (const incident of snapshot.incidents) incidents.set(incident.id, incident);
    for (const incident of snapshot.incidents) if (isOverdue(incident)) seenOverdue.add(incident.id);
    $("community").textContent = snapshot.console;
    if (snapshot.breakdown) {
      breakdown = snapshot.breakdown;
      childOfGrid.clear();
      for (const child of breakdown.children) for (const g of child.grids) childOfGrid.set(g, child);
      $("grids").textContent = breakdown.name + " · " + breakdown.level + " → " + breakdown.child_level;
      $("per-grid-title").textContent = "下级区域 By " + breakdown.child_level;
    } else {
      $("grids").textContent = snapshot.grids.length ? snapshot.grids.join(" · ") : "全部网格 all grids";
    }
    render();
  });
  source.addEventListener("change", (e) => {
    const change = JSON.parse(e.data);
    lastCursor = e.lastEventId;
    const held = incidents.get(change.incident.id);
    window.helpgridConsole.changes += 1;
    if (held && held.revision >= change.incident.revision) {
      window.helpgridConsole.repeats += 1;
      return;
    }
    const known = held !== undefined;
    incidents.set(change.incident.id, change.incident);
    if (!known && change.incident.state !== "closed") announce(change.incident.id);
    render();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // The server refused (restarting, or the token expired): try again with our cursor.
      setLink("down", "断开 reconnecting");
      setTimeout(connect, 2000);
    } else {
      setLink("connecting", "重连中 reconnecting");
    }
  });
}

function setLink(kind, text) {
  const link = $("link");
  link.className = "link " + kind;
  link.textContent = text;
}

const fresh = new Map(); // id -> until (ms)
function announce(id) {
  fresh.set(id, Date.now() + 6000);
  beep();
}

function beep() {
  if (!soundOn) return;
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.35);
  } catch (_) { /* no audio device: the highlight still shows */ }
}

function isOverdue(incident) {
  return incident.state !== "closed" && incident.deadline != null && Date.now() > incident.deadline;
}

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return (h ? h + ":" + two(m) : String(m)) + ":" + two(sec);
}

function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function cell(row, text, className, sub) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  if (sub) {
    const span = document.createElement("span");
    span.className = "sub";
    span.textContent = sub;
    td.appendChild(span);
  }
  row.appendChild(td);
  return td;
}

function render() {
  const now = Date.now();
  const open = [...incidents.values()].filter((i) => i.state !== "closed");
  open.sort((a, b) =>
    (isOverdue(b) - isOverdue(a)) ||
    (PRIORITY_RANK[b.priority] - PRIORITY_RANK[a.priority]) ||
    ((b.opened_at || 0) - (a.opened_at || 0)));
  const rows = $("rows");
  rows.replaceChildren();
  for (const incident of open) {
    const overdue = isOverdue(incident);
    if (overdue && !seenOverdue.has(incident.id)) {
      seenOverdue.add(incident.id);
      beep();
    }
    const row = document.createElement("tr");
    row.dataset.incident = incident.id;
    row.dataset.state = incident.state;
    row.className = incident.priority + (overdue ? " overdue" : "") +
      ((fresh.get(incident.id) || 0) > now ? " fresh" : "");
    cell(row, KIND_LABEL[incident.kind] || incident.kind, "",
      incident.reports > 1 ? "×" + incident.reports : (incident.escalated ? "已升级 escalated" : ""));
    cell(row, incident.grid);
    cell(row, incident.place);
    cell(row, age(now - (incident.opened_at || now)), "age", overdue ? "超时 overdue" : "");
    const people = incident.responders.map((r) => (r.name || "") + " " + r.role).join(" / ");
    cell(row, people || "—");
    const state = cell(row, "");
    const badge = document.createElement("span");
    badge.className = "state " + incident.state;
    badge.textContent = STATE_LABEL[incident.state] || incident.state;
    state.appendChild(badge);
    rows.appendChild(row);
  }
  $("open-count").textContent = open.length;
  $("empty").style.display = open.length ? "none" : "block";
  renderFigures();
}

function renderFigures() {
  const today = [...incidents.values()].filter((i) => (i.opened_at || 0) >= startOfToday());
  const closed = today.filter((i) => i.state === "closed");
  const acks = today.filter((i) => i.acknowledged_at).map((i) => i.acknowledged_at - i.opened_at);
  $("f-requests").textContent = today.length;
  $("f-closed").textContent = closed.length;
  $("f-rate").textContent = today.length ? (100 * closed.length / today.length).toFixed(1) + "%" : "–";
  const m = median(acks);
  $("f-ack").textContent = m == null ? "–" : (m < 60000 ? (m / 1000).toFixed(0) + " s" : age(m));
  $("f-escalations").textContent = today.filter((i) => i.escalated).length;
  const outcomes = new Map();
  for (const i of closed) if (i.outcome) outcomes.set(i.outcome, (outcomes.get(i.outcome) || 0) + 1);
  const outcomeRows = $("outcome-rows");
  outcomeRows.replaceChildren();
  for (const code of Object.keys(OUTCOME_LABEL)) {
    if (!outcomes.has(code)) continue;
    const row = document.createElement("tr");
    row.dataset.outcome = code;
    cell(row, OUTCOME_LABEL[code]); cell(row, String(outcomes.get(code)));
    outcomeRows.appendChild(row);
  }
  // One row per grid, or per child area of the area shown (every child, even at zero).
  const perGrid = new Map();
  const rowOf = (grid) => {
    const child = breakdown ? childOfGrid.get(grid) : null;
    return child ? child.name : grid;
  };
  if (breakdown) for (const child of breakdown.children) perGrid.set(child.name, { today: 0, open: 0, closed: 0 });
  for (const i of incidents.values()) {
    const key = rowOf(i.grid);
    const g = perGrid.get(key) || { today: 0, open: 0, closed: 0 };
    if ((i.opened_at || 0) >= startOfToday()) g.today += 1;
    if (i.state !== "closed") g.open += 1;
    else if ((i.opened_at || 0) >= startOfToday()) g.closed += 1;
    perGrid.set(key, g);
  }
  const body = $("grid-rows");
  body.replaceChildren();
  for (const [grid, g] of [...perGrid.entries()].sort()) {
    const row = document.createElement("tr");
    row.dataset.grid = grid;
    cell(row, grid); cell(row, String(g.today)); cell(row, String(g.open)); cell(row, String(g.closed));
    body.appendChild(row);
  }
}

function tick() {
  const d = new Date();
  $("clock").textContent = d.toLocaleTimeString("zh-CN", { hour12: false });
  render();
}

$("sound").addEventListener("click", () => {
  soundOn = !soundOn;
  $("sound").textContent = soundOn ? "声音 Sound: on" : "声音 Sound: off";
  if (soundOn) beep();
});

connect();
tick();
setInterval(tick, 1000);
