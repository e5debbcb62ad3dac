// HelpGrid responder app. Keeps "my assignments" from the server's event stream (a snapshot,
// then every change, each with the Watch cursor as its id, so a reconnect resumes exactly
// after the last update), and sends actions through a queue kept in localStorage: an action
// taken offline waits there with its own request id and is sent when the network is back;
// the server answers a retry of an applied action with success, so resending is safe.
"use strict";

const cards = new Map(); // id -> assignment view, as the server sent it (shown cards only)
const revisions = new Map(); // id -> newest revision the stream delivered
// What the stream delivered; `repeats` counts updates the page already held (there should be
// none), `alerts` new assignments announced with sound and vibration.
window.helpgridApp = { changes: 0, repeats: 0, snapshots: 0, alerts: 0, sent: 0, failed: 0 };
let me = null;
let clockOffset = 0; // server time - local time
let lastCursor = "";
let source = null;
let audio = null;
let watchId = null;
let lastLocationSent = 0;
const QUEUE_KEY = "helpgrid.app.queue.v1";
const LOCATION_KEY = "helpgrid.app.shareLocation";
const LOCATION_EVERY_MS = 30000;

const $ = (id) => document.getElementById(id);

const KIND = {
  help: "求助 Help", urgent: "紧急 Urgent", medical: "医疗 Medical", maintenance: "设备维护 Maintenance",
  intrusion: "入侵 Intrusion", fight: "斗殴 Fight", fall: "跌倒 Fall", fire: "火情 Fire",
  crowd: "聚集 Crowd", loitering: "徘徊 Loitering", camera: "摄像头告警 Camera alert",
};
const PRIORITY = { critical: "特急 Critical", high: "紧急 High", normal: "一般 Normal" };
const STATE = {
  waiting: "待接 waiting", assigned: "待确认 to acknowledge", acknowledged: "处置中 acknowledged",
  closed: "已办结 closed",
};
// Outcome codes (README "Outcome codes"): the code the server takes, and the label.
const OUTCOMES = [
  ["resolved_on_spot", "当场解决 Resolved on the spot"],
  ["mediated", "调解 Mediated"],
  ["referred_to_town", "上报镇街 Referred up to the town"],
  ["referred_to_police", "移交公安 Referred to police"],
  ["false_alarm", "误报 False alarm"],
  ["nobody_there", "无人在场 Nobody there"],
];
const ROLE = { responder: "网格员 responder", supervisor: "网格长 supervisor" };

function now() { return Date.now() + clockOffset; }

function requestId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- sign-in -------------------------------------------------------------------------

async function start() {
  let answer;
  try {
    answer = await fetch("api/me", { cache: "no-store" });
  } catch (_) {
    setLink("down", "离线 offline");
    setTimeout(start, 3000);
    return;
  }
  if (answer.status === 401 || answer.status === 403) {
    const body = await answer.json().catch(() => ({}));
    showSignIn(answer.status === 403 ? body.error : "");
    return;
  }
  if (!answer.ok) {
    setTimeout(start, 3000);
    return;
  }
  me = await answer.json();
  clockOffset = me.server_time - Date.now();
  $("signin").hidden = true;
  $("main").hidden = false;
  $("me-name").textContent = me.name || me.subject;
  $("me-role").textContent = (ROLE[me.role] || me.role) + (me.patrol ? " · 巡警 patrol" : "");
  $("duty").checked = me.on_duty;
  $("share-location").checked = localStorage.getItem(LOCATION_KEY) === "1";
  if ($("share-location").checked) startLocation();
  if (!source) connect();
  renderQueue();
  drain();
}

function showSignIn(message) {
  $("main").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  if (source) { source.close(); source = null; }
}

$("signin-button").addEventListener("click", async () => {
  const token = $("token").value.trim();
  if (!token) return;
  const answer = await fetch("api/signin", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
  }).catch(() => null);
  if (!answer) { $("signin-error").textContent = "网络不可用 · No network"; return; }
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    $("signin-error").textContent = body.error || ("HTTP " + answer.status);
    return;
  }
  $("token").value = "";
  start();
});

$("signout").addEventListener("click", async () => {
  await fetch("api/signout", { method: "POST", headers: { "x-csrf-token": me ? me.csrf : "" } }).catch(() => null);
  localStorage.removeItem(QUEUE_KEY);
  cards.clear();
  showSignIn("");
});

// ---- the stream ----------------------------------------------------------------------

function connect() {
  const url = "events" + (lastCursor ? "?cursor=" + encodeURIComponent(lastCursor) : "");
  source = new EventSource(url);
  source.addEventListener("open", () => setLink("live", "实时 live"));
  source.addEventListener("snapshot", (e) => {
    const snapshot = JSON.parse(e.data);
    lastCursor = e.lastEventId;
    window.helpgridApp.snapshots += 1;
    const before = new Map(cards);
    cards.clear();
    for (const view of snapshot.incidents) {
      cards.set(view.id, view);
      revisions.set(view.id, view.revision);
      if (isNewForMe(view, before.get(view.id))) announce(view);
    }
    render();
  });
  source.addEventListener("change", (e) => {
    const view = JSON.parse(e.data);
    lastCursor = e.lastEventId;
    window.helpgridApp.changes += 1;
    if ((revisions.get(view.id) || 0) >= view.revision) {
      window.helpgridApp.repeats += 1;
      return;
    }
    revisions.set(view.id, view.revision);
    const held = cards.get(view.id);
    if (view.show) cards.set(view.id, view); else cards.delete(view.id);
    if (isNewForMe(view, held)) announce(view);
    if (!view.show && held && view.state === "closed" && view.outcome) {
      toast("已办结 Closed: " + label(OUTCOMES, view.outcome));
    }
    render();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (signed out, token expired) or the server went away: check, then resume
      // from our cursor.
      setLink("down", "断开 reconnecting");
      source = null;
      setTimeout(async () => {
        const answer = await fetch("api/me", { cache: "no-store" }).catch(() => null);
        if (answer && (answer.status === 401 || answer.status === 403)) showSignIn("");
        else if (!source) connect();
      }, 1500);
    } else {
      setLink("connecting", "重连中 reconnecting");
    }
  });
}

function isNewForMe(view, held) {
  const waiting = (v) => v && v.show && v.can_acknowledge && !v.acknowledged;
  return waiting(view) && !waiting(held);
}

function setLink(kind, text) {
  const link = $("link");
  link.className = "link " + kind;
  link.textContent = text;
}

// ---- alerts --------------------------------------------------------------------------

const fresh = new Map(); // id -> until (ms)
function announce(view) {
  window.helpgridApp.alerts += 1;
  fresh.set(view.id, Date.now() + 5000);
  if (navigator.vibrate) navigator.vibrate([300, 150, 300, 150, 300]);
  beep();
}

function beep() {
  if (!audio) return;
  try {
    for (const [at, hz] of [[0, 880], [0.25, 660], [0.5, 880]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = hz;
      gain.gain.value = 0.25;
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + 0.2);
    }
  } catch (_) { /* no audio device: vibration and the highlight remain */ }
}

// Browsers allow sound only after the person touched the page once.
document.addEventListener("pointerdown", () => {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    audio.resume();
    $("alert-hint").hidden = true;
  } catch (_) { /* no audio */ }
}, { once: true });

// ---- drawing -------------------------------------------------------------------------

function label(pairs, code) {
  const found = pairs.find(([c]) => c === code);
  return found ? found[1] : code;
}

function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return (h ? h + ":" + two(m) : String(m)) + ":" + two(sec);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function householdBlock(h) {
  const block = el("div", "household");
  block.appendChild(el("div", h.masked ? "masked" : "", "住户 Household " + h.id));
  if (h.address) block.appendChild(el("div", h.masked ? "masked" : "", h.address));
  if (h.contact_name || h.contact_phone) {
    const who = el("div", h.masked ? "masked" : "");
    who.appendChild(document.createTextNode((h.contact_name || "") + " "));
    if (!h.masked && h.contact_phone) {
      const call = el("a", "", h.contact_phone);
      call.href = "tel:" + h.contact_phone;
      who.appendChild(call);
    } else {
      who.appendChild(document.createTextNode(h.contact_phone || ""));
    }
    block.appendChild(who);
  }
  if (h.latitude != null && h.longitude != null) {
    const maps = el("div", "maps");
    const geo = el("a", "map", "地图 Map");
    geo.href = "geo:" + h.latitude + "," + h.longitude + "?q=" + h.latitude + "," + h.longitude;
    const amap = el("a", "map", "高德 Amap");
    amap.href = "https://uri.amap.com/marker?position=" + h.longitude + "," + h.latitude;
    amap.rel = "noreferrer";
    maps.append(geo, document.createTextNode(" · "), amap);
    block.appendChild(maps);
  }
  return block;
}

function render() {
  const list = [...cards.values()].sort((a, b) =>
    (Number(b.can_acknowledge) - Number(a.can_acknowledge)) ||
    ((a.deadline || Infinity) - (b.deadline || Infinity)) ||
    ((b.opened_at || 0) - (a.opened_at || 0)));
  const box = $("cards");
  box.replaceChildren();
  for (const v of list) {
    const card = el("article", "card " + v.priority + ((fresh.get(v.id) || 0) > Date.now() ? " fresh" : ""));
    card.dataset.incident = v.id;
    card.dataset.state = v.state;
    const top = el("div", "top");
    top.append(el("span", "kind", KIND[v.kind] || v.kind), el("span", "badge " + v.priority, PRIORITY[v.priority] || v.priority));
    card.appendChild(top);
    card.appendChild(el("div", "sub", (STATE[v.state] || v.state) + " · " + v.grid + (v.place ? " · " + v.place : "") +
      (v.reports > 1 ? " · ×" + v.reports : "")));
    const times = el("div", "times");
    const age = el("div", "", "");
    age.appendChild(el("div", "sub", "已等待 Age"));
    age.appendChild(el("div", "age", "")).dataset.since = v.opened_at || "";
    times.appendChild(age);
    if (v.deadline && !v.acknowledged) {
      const due = el("div", "", "");
      due.appendChild(el("div", "sub", "确认时限 Acknowledge within"));
      due.appendChild(el("div", "countdown", "")).dataset.deadline = v.deadline;
      times.appendChild(due);
    }
    card.appendChild(times);
    if (v.household) card.appendChild(householdBlock(v.household));
    const actions = el("div", "actions");
    if (v.can_acknowledge) {
      const ack = el("button", "ack", "确认接单 Acknowledge");
      ack.type = "button";
      ack.dataset.action = "acknowledge";
      ack.addEventListener("click", () => {
        enqueue({ path: "api/incidents/" + encodeURIComponent(v.id) + "/acknowledge", body: {}, label: "确认 Acknowledge" });
        ack.disabled = true;
      });
      actions.appendChild(ack);
    }
    if (v.can_ask_help) {
      // Two taps: the first arms the button, so a pocket press does not escalate.
      const help = el("button", "help", "我需要支援 I need help");
      help.type = "button";
      help.dataset.action = "help";
      help.addEventListener("click", () => {
        if (help.dataset.armed !== "1") {
          help.dataset.armed = "1";
          help.textContent = "再点一次上报 Tap again to escalate";
          return;
        }
        enqueue({ path: "api/incidents/" + encodeURIComponent(v.id) + "/help", body: { note: "" }, label: "支援 Help" });
        help.disabled = true;
      });
      actions.appendChild(help);
    }
    if (v.can_close) {
      const close = el("button", "", "办结 Close");
      close.type = "button";
      close.dataset.action = "close";
      close.addEventListener("click", () => openClose(v.id));
      actions.appendChild(close);
    }
    card.appendChild(actions);
    box.appendChild(card);
  }
  $("count").textContent = list.length;
  $("empty").hidden = list.length > 0;
  tick();
}

function tick() {
  const t = now();
  for (const node of document.querySelectorAll(".age")) {
    const since = Number(node.dataset.since);
    node.textContent = since ? clock(t - since) : "–";
  }
  for (const node of document.querySelectorAll(".countdown")) {
    const left = Number(node.dataset.deadline) - t;
    node.textContent = left > 0 ? clock(left) : "超时 overdue";
    node.classList.toggle("late", left < 30000);
  }
}
setInterval(tick, 250);

// ---- close ---------------------------------------------------------------------------

let closing = null;
function openClose(id) {
  closing = id;
  $("close-incident").textContent = id;
  $("close-note").value = "";
  $("close-error").textContent = "";
  const box = $("outcomes");
  box.querySelectorAll(".outcome").forEach((n) => n.remove());
  for (const [code, text] of OUTCOMES) {
    const row = el("label", "outcome");
    const input = el("input");
    input.type = "radio";
    input.name = "outcome";
    input.value = code;
    row.append(input, el("span", "", text));
    box.appendChild(row);
  }
  $("close-sheet").hidden = false;
}

$("close-cancel").addEventListener("click", () => { $("close-sheet").hidden = true; closing = null; });
$("close-submit").addEventListener("click", () => {
  const chosen = document.querySelector("input[name=outcome]:checked");
  if (!chosen) { $("close-error").textContent = "请选择处置结果 · Choose an outcome"; return; }
  enqueue({
    path: "api/incidents/" + encodeURIComponent(closing) + "/close",
    body: { outcome: chosen.value, note: $("close-note").value },
    label: "办结 Close",
  });
  $("close-sheet").hidden = true;
  closing = null;
});

// ---- duty and location ---------------------------------------------------------------

$("duty").addEventListener("change", (e) => {
  enqueue({ path: "api/duty", body: { on_duty: e.target.checked }, label: e.target.checked ? "上岗 On duty" : "下岗 Off duty" });
});

$("share-location").addEventListener("change", (e) => {
  localStorage.setItem(LOCATION_KEY, e.target.checked ? "1" : "0");
  if (e.target.checked) startLocation(); else stopLocation();
});

function startLocation() {
  if (!navigator.geolocation || watchId != null) return;
  watchId = navigator.geolocation.watchPosition((pos) => {
    if (Date.now() - lastLocationSent < LOCATION_EVERY_MS) return;
    lastLocationSent = Date.now();
    // Only the newest position matters: replace a queued one rather than pile them up.
    const queue = loadQueue().filter((a) => a.path !== "api/location");
    saveQueue(queue);
    enqueue({ path: "api/location", body: { latitude: pos.coords.latitude, longitude: pos.coords.longitude }, label: "位置 Location", quiet: true });
  }, (error) => {
    toast("无法获取位置 · Location unavailable: " + error.message, true);
  }, { enableHighAccuracy: true, maximumAge: 30000 });
}

function stopLocation() {
  if (watchId != null && navigator.geolocation) navigator.geolocation.clearWatch(watchId);
  watchId = null;
}

// ---- the outbox ----------------------------------------------------------------------

function loadQueue() {
  try { return JSON.parse(localStorage.getItem(QUEUE_KEY) || "[]"); } catch (_) { return []; }
}
function saveQueue(queue) { localStorage.setItem(QUEUE_KEY, JSON.stringify(queue)); }

function enqueue(action) {
  const queue = loadQueue();
  queue.push({ ...action, request_id: requestId(), queued_at: Date.now() });
  saveQueue(queue);
  renderQueue();
  drain();
}

function renderQueue() {
  const queue = loadQueue();
  const box = $("queue");
  box.hidden = queue.length === 0;
  box.textContent = "待发送 " + queue.length + " 项 · " + queue.length + " action(s) waiting for the network: " +
    queue.map((a) => a.label).join(", ");
}

let draining = false;
async function drain() {
  if (draining || !me) return;
  draining = true;
  try {
    for (;;) {
      const queue = loadQueue();
      if (!queue.length) break;
      const action = queue[0];
      let answer;
      try {
        answer = await fetch(action.path, {
          method: "POST",
          headers: { "content-type": "application/json", "x-csrf-token": me.csrf },
          body: JSON.stringify({ ...action.body, request_id: action.request_id }),
        });
      } catch (_) {
        setTimeout(drain, 3000); // offline: the same request, with the same id, later
        break;
      }
      if (answer.status === 503 || answer.status === 502 || answer.status === 504) {
        setTimeout(drain, 3000); // not applied, or not known whether: retry with the same id
        break;
      }
      if (answer.status === 401) { showSignIn(""); break; }
      const body = await answer.json().catch(() => ({}));
      saveQueue(loadQueue().filter((a) => a.request_id !== action.request_id));
      if (answer.ok) {
        window.helpgridApp.sent += 1;
        if (action.path === "api/duty") me.on_duty = body.on_duty;
        if (!action.quiet) toast("已发送 Sent: " + action.label);
      } else {
        window.helpgridApp.failed += 1;
        toast(action.label + ": " + (body.error || "HTTP " + answer.status), true);
        if (action.path === "api/duty") $("duty").checked = me.on_duty;
        render(); // re-enable buttons
      }
      renderQueue();
    }
  } finally {
    draining = false;
    renderQueue();
  }
}
window.addEventListener("online", drain);

function toast(text, bad) {
  const node = el("div", "toast" + (bad ? " bad" : ""), text);
  $("toasts").appendChild(node);
  setTimeout(() => node.remove(), bad ? 8000 : 3000);
}

// The app shell offline (sw.js): the page opens without a network and its queued actions
// wait for it. Not where service workers are unavailable (plain HTTP on another host).
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js", { scope: "/app/" }).catch(() => null);
}

start();
