// The line view: the server pushes the slot tiles, the shift's figures and
// the status strip, already drawn, whenever they change; this swaps them
// in. A tile that turns to FAIL or needs attention flashes once and, with
// `[ui] sound_alerts`, sounds a short tone. Without script the page still
// works (reload to refresh).
"use strict";
const ALERTING = ["fail", "attn"];
const alerting = (tile) => ALERTING.some((c) => tile.classList.contains(c));
// Each tile's state at the last redraw: a tile alerts only on a change.
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
remember();
const events = new EventSource("/events");
events.onmessage = (e) => {
  const slots = document.getElementById("slots");
  if (!slots) return;
  // Keep what is being typed or scanned into a field across the redraw.
  const typing = {};
  slots.querySelectorAll("input[id]").forEach((i) => { if (i.value) typing[i.id] = i.value; });
  const focused = document.activeElement && slots.contains(document.activeElement) ? document.activeElement.id : null;
  slots.innerHTML = e.data;
  for (const [id, value] of Object.entries(typing)) {
    const i = document.getElementById(id);
    if (i) i.value = value;
  }
  if (focused) {
    const f = document.getElementById(focused);
    if (f) f.focus();
  }
  let alert = false;
  slots.querySelectorAll(".tile").forEach((t) => {
    if (alerting(t) && before.get(t.id) === false) {
      t.classList.add("flash");
      alert = true;
    }
  });
  remember();
  if (alert && sound) beep();
};
// The stream ends with the session (idle timeout, sign-out): the browser
// cannot reconnect, so go and sign in again.
events.onerror = () => {
  if (events.readyState === EventSource.CLOSED) window.location.href = "/login";
};
