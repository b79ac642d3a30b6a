// The sign-in page: a badge scanner types the badge and ends with Enter,
// which moves to the PIN instead of sending an empty PIN; the PIN can be
// typed on an on-screen pad sized for gloved fingers. Without script the
// form still works (badge and PIN typed, then Sign in).
"use strict";
const form = document.getElementById("badge-form");
const badge = document.getElementById("badge");
const pin = document.getElementById("pin");
const pad = document.getElementById("pinpad");
if (form && badge && pin) {
  badge.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (badge.value.trim()) pin.focus();
    }
  });
  // A form sent with a badge and no PIN goes to the PIN instead.
  form.addEventListener("submit", (e) => {
    if (badge.value.trim() && !pin.value) {
      e.preventDefault();
      pin.focus();
    }
  });
  if (pad) {
    pad.hidden = false;
    pad.addEventListener("click", (e) => {
      const k = e.target.closest("button[data-key]");
      if (!k) return;
      if (k.dataset.key === "back") pin.value = pin.value.slice(0, -1);
      else pin.value += k.dataset.key;
      pin.focus();
    });
  }
}
