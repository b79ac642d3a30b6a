// The line view: the server pushes the slot tiles, already drawn, whenever
// a slot changes; this swaps them in. Without script the page still works
// (reload to refresh).
"use strict";
const events = new EventSource("/events");
events.onmessage = (e) => {
  const slots = document.getElementById("slots");
  if (slots) slots.innerHTML = e.data;
};
