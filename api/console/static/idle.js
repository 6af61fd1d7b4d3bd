// Automatic sign-off on an idle page: once the session store's idle time-out has passed
// since this page last reached the server (its load, or an htmx request since), the page
// ends the session and leaves for the sign-in page, so no record stays on an unattended
// screen. The clock mirrors the server's: only requests touch a session.
"use strict";

let timer;

function arm() {
  clearTimeout(timer);
  const seconds = Number(document.body.dataset.idleSeconds);
  if (seconds > 0) timer = setTimeout(() => location.assign("/ui/timed-out"), seconds * 1000);
}

document.addEventListener("DOMContentLoaded", arm);
document.addEventListener("htmx:afterRequest", arm);
