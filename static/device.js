// The device page: a revoke or a retirement asks once more before the form
// is sent (the form's data-confirm). A file of its own: the station's
// Content-Security-Policy runs no inline script.
"use strict";
document.addEventListener("submit", (e) => {
  const question = e.target.dataset ? e.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    e.preventDefault();
  }
});
