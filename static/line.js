// The line view: the server pushes the slot tiles, already drawn, whenever
// a slot changes; this swaps them in. Without script the page still works
// (reload to refresh).
"use strict";
const events = new EventSource("/events");
events.onmessage = (e) => {
  const slots = document.getElementById("slots");
  if (slots) slots.innerHTML = e.data;
};
// The stream ends with the session (idle timeout, sign-out): the browser
// cannot reconnect, so go and sign in again.
events.onerror = () => {
  if (events.readyState === EventSource.CLOSED) window.location.href = "/login";
};
