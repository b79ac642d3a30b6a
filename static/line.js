// The line view: the server pushes the slot tiles, already drawn, whenever
// a slot changes; this swaps them in. Without script the page still works
// (reload to refresh).
"use strict";
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
};
// The stream ends with the session (idle timeout, sign-out): the browser
// cannot reconnect, so go and sign in again.
events.onerror = () => {
  if (events.readyState === EventSource.CLOSED) window.location.href = "/login";
};
