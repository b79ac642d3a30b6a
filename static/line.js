// The line view: the server pushes the slot tiles, the shift's figures,
// the status strip and the recent boards, already drawn, whenever they
// change, and a beat every second otherwise. This patches them into the
// page in place: only what changed changes, so a button being tapped, the
// keyboard focus, the scroll and what is being typed survive every update.
// Actions go to the station without reloading the page. A tile that turns
// to FAIL or needs attention flashes once and, with `[ui] sound_alerts`,
// sounds a short tone. When nothing has come from the station for 2.5 s a
// banner says the connection is lost. Without script the page still works
// (forms post, reload to refresh).
"use strict";
const ALERTING = ["fail", "attn"];
const alerting = (tile) => ALERTING.some((c) => tile.classList.contains(c));
// Each tile's state at the last update: a tile alerts only on a change.
const before = new Map();
const remember = () => {
  document.querySelectorAll("#slots .tile").forEach((t) => before.set(t.id, alerting(t)));
};
let audio = null;
// Browsers play sound only after a tap on the page: the first one opens it.
const sound = document.body && document.body.dataset.sound === "on";
if (sound) {
  document.addEventListener("pointerdown", () => {
    if (!audio) audio = new AudioContext();
    audio.resume();
  }, { once: true });
}
const beep = () => {
  if (!audio || audio.state !== "running") return;
  const osc = audio.createOscillator();
  const gain = audio.createGain();
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.3, audio.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
  osc.connect(gain).connect(audio.destination);
  osc.start();
  osc.stop(audio.currentTime + 0.6);
};

// --- Patching in place -------------------------------------------------

// What identifies a node among its siblings: its id, else for a button or
// input its name and value, else its tag (matched in order).
const key = (n) => {
  if (n.nodeType !== Node.ELEMENT_NODE) return "#" + n.nodeType;
  if (n.id) return "id:" + n.id;
  if (n.tagName === "BUTTON" || n.tagName === "INPUT") {
    return `${n.tagName}:${n.getAttribute("name") || ""}:${n.getAttribute("value") || ""}:${n.getAttribute("formaction") || ""}`;
  }
  return n.tagName;
};

// Classes the page adds by itself and the server does not know.
const LOCAL_CLASSES = ["flash", "armed"];

const syncAttributes = (old, neu) => {
  for (const a of [...old.attributes]) {
    if (a.name === "class" || neu.hasAttribute(a.name)) continue;
    old.removeAttribute(a.name);
  }
  for (const a of [...neu.attributes]) {
    if (a.name === "class") continue;
    // What a person is typing stays theirs.
    if (old.tagName === "INPUT" && a.name === "value") continue;
    if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  }
  const local = LOCAL_CLASSES.filter((c) => old.classList.contains(c));
  const want = [...neu.classList, ...local].join(" ");
  if ((old.getAttribute("class") || "") !== want) {
    if (want) old.setAttribute("class", want);
    else old.removeAttribute("class");
  }
};

// Makes `old`'s children look like `neu`'s, keeping every node that can be
// kept.
const morphChildren = (old, neu) => {
  const spare = new Map();
  for (const c of [...old.childNodes]) {
    const k = key(c);
    if (!spare.has(k)) spare.set(k, []);
    spare.get(k).push(c);
  }
  let at = old.firstChild;
  for (const n of [...neu.childNodes]) {
    const list = spare.get(key(n));
    const match = list && list.length ? list.shift() : null;
    let node;
    if (match) {
      morph(match, n);
      node = match;
    } else {
      node = n.cloneNode(true);
    }
    if (node !== at) old.insertBefore(node, at);
    else at = at.nextSibling;
  }
  for (const list of spare.values()) list.forEach((c) => c.remove());
};

const morph = (old, neu) => {
  if (old.nodeType === Node.TEXT_NODE || old.nodeType === Node.COMMENT_NODE) {
    if (old.nodeValue !== neu.nodeValue) old.nodeValue = neu.nodeValue;
    return;
  }
  syncAttributes(old, neu);
  if (old.tagName === "TEMPLATE") {
    old.innerHTML = neu.innerHTML;
    return;
  }
  morphChildren(old, neu);
};

const update = (html) => {
  const slots = document.getElementById("slots");
  if (!slots) return;
  const t = document.createElement("template");
  t.innerHTML = html;
  morphChildren(slots, t.content);
  // The recent boards, drawn with the tiles, go to the drawer.
  const live = document.getElementById("recent-live");
  const rows = document.getElementById("recent-rows");
  if (live && rows) {
    const fresh = document.createElement("tbody");
    fresh.appendChild(live.content.cloneNode(true));
    morphChildren(rows, fresh);
  }
  armAgain();
  let alert = false;
  slots.querySelectorAll(".tile").forEach((tile) => {
    if (alerting(tile) && before.get(tile.id) === false) {
      tile.classList.add("flash");
      setTimeout(() => tile.classList.remove("flash"), 1500);
      alert = true;
    }
  });
  remember();
  if (alert && sound) beep();
};

// --- Connection -----------------------------------------------------------

const banner = document.getElementById("conn-lost");
let heard = Date.now();
const lost = (yes) => {
  if (!banner) return;
  if (banner.hidden === !yes) return;
  banner.hidden = !yes;
  document.body.classList.toggle("offline", yes);
};
setInterval(() => lost(Date.now() - heard > 2500), 250);

remember();
const events = new EventSource("/events");
const alive = () => {
  heard = Date.now();
  lost(false);
};
events.onmessage = (e) => {
  alive();
  update(e.data);
};
events.addEventListener("beat", alive);
events.onerror = () => {
  // The stream ends for good when the session does (sign-out elsewhere, a
  // disabled user): go and sign in again. Otherwise the browser keeps
  // trying, and the banner says so.
  if (events.readyState === EventSource.CLOSED) {
    window.location.href = "/login?why=ended";
  } else {
    lost(true);
  }
};

// --- Actions without reloading ----------------------------------------

let toastTimer = null;
const toast = (text) => {
  let t = document.getElementById("toast");
  if (!t) {
    t = document.createElement("p");
    t.id = "toast";
    t.className = "toast";
    t.setAttribute("role", "status");
    document.body.appendChild(t);
  }
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
};

// Abort asks again: the first tap arms it for 4 s, the second one acts.
const armed = new Map();
const ARM_TEXT = "Tap again to abort";
const armAgain = () => {
  for (const [id, until] of armed) {
    const b = document.getElementById(id);
    if (!b || Date.now() > until) {
      armed.delete(id);
      if (b) disarm(b);
      continue;
    }
    b.classList.add("armed");
    if (b.dataset.text === undefined) b.dataset.text = b.textContent;
    b.textContent = ARM_TEXT;
  }
};
const disarm = (b) => {
  b.classList.remove("armed");
  if (b.dataset.text !== undefined) {
    b.textContent = b.dataset.text;
    delete b.dataset.text;
  }
};

const send = async (form, submitter) => {
  const body = new URLSearchParams(new FormData(form, submitter));
  const to = (submitter && submitter.getAttribute("formaction")) || form.getAttribute("action");
  try {
    const r = await fetch(to, { method: "POST", body, headers: { Accept: "application/json" } });
    if (r.status === 401) {
      window.location.href = "/login?why=ended";
      return;
    }
    if (!r.ok) {
      let text = `The station refused (${r.status}).`;
      try {
        const j = await r.json();
        if (j && j.error) text = j.error;
      } catch (_) { /* not JSON */ }
      toast(text);
      return;
    }
    toast("Done.");
    if (form.classList.contains("work-order")) {
      const w = form.querySelector("input[name=work_order]").value.trim();
      const s = form.closest("details").querySelector("summary");
      s.textContent = "Work order" + (w ? ": " : "");
      if (w) {
        const strong = document.createElement("strong");
        strong.textContent = w;
        s.appendChild(strong);
      }
    }
  } catch (_) {
    lost(true);
    toast("The station did not answer: try again when the connection is back.");
  }
};

document.addEventListener("submit", (e) => {
  const form = e.target;
  if (!form.closest("#slots") && !form.classList.contains("work-order")) return;
  e.preventDefault();
  const submitter = e.submitter;
  if (submitter && submitter.classList.contains("abort")) {
    const until = armed.get(submitter.id);
    if (!until || Date.now() > until) {
      armed.set(submitter.id, Date.now() + 4000);
      armAgain();
      setTimeout(armAgain, 4100);
      return;
    }
    armed.delete(submitter.id);
    disarm(submitter);
    const confirm = document.createElement("input");
    confirm.type = "hidden";
    confirm.name = "confirm";
    confirm.value = "yes";
    form.appendChild(confirm);
    send(form, submitter).finally(() => confirm.remove());
    return;
  }
  send(form, submitter);
});
