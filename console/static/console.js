// Refund Desk console: progressive enhancement only. Every page works without this file.
"use strict";

// Times: the server writes UTC; show them in the agent's own time zone.
function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const moment = new Date(el.getAttribute("datetime"));
    if (!isNaN(moment)) {
      el.title = el.textContent;
      el.textContent = moment.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      });
    }
  }
}

// The queue reloads its rows while the tab is visible and no one is typing in it.
function refreshQueue() {
  const live = document.getElementById("queue-live");
  if (!live) return;
  const url = live.dataset.refreshUrl;
  const every = Number(live.dataset.refreshSeconds || 20) * 1000;
  const stamp = () => {
    const el = document.querySelector("#queue-live [data-updated]");
    if (el) el.textContent = new Date().toLocaleTimeString();
  };
  stamp();
  setInterval(async () => {
    if (document.hidden || document.activeElement?.closest("#queue-live form")) return;
    try {
      const response = await fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (!response.ok || response.redirected) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("queue-live");
      const current = document.getElementById("queue-live");
      if (fresh && current) {
        current.replaceWith(fresh);
        localTimes(fresh);
        stamp();
      }
    } catch (e) { /* the next round tries again */ }
  }, every);
}

// The approve form: typing an amount means a part approval.
function approveForm() {
  for (const form of document.querySelectorAll('form[data-action="approve"]')) {
    const amount = form.querySelector("[data-part-amount]");
    const part = form.querySelector('input[name="mode"][value="part"]');
    if (amount && part) amount.addEventListener("input", () => { part.checked = true; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  refreshQueue();
  approveForm();
});
