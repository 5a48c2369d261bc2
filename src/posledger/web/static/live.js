// posledger web view: live parts and decisions without reloading. No build step, no library.
// The server says on /events (server-sent events) which keys changed in the store's log; each
// part marked data-live is fetched again (a part with data-stream only when its key changed).
"use strict";
(() => {
  let log = Number(document.body.dataset.log || 0);
  const live = document.getElementById("live");
  const problem = document.getElementById("problem");
  const notice = document.getElementById("notice");

  function show(element, text, bad) {
    element.textContent = text || "";
    element.hidden = !text;
    element.classList.toggle("bad", Boolean(bad));
  }

  function connected(on) {
    live.classList.toggle("on", on);
    live.classList.toggle("off", !on);
    live.title = on ? "live updates: connected" : "live updates: reconnecting";
  }

  async function load(part) {
    if (part.contains(document.activeElement) && document.activeElement.matches("input")) {
      part.dataset.stale = "1"; // someone is typing here: refreshed when they leave the part
      return;
    }
    delete part.dataset.stale;
    const response = await fetch(part.dataset.live, { cache: "no-store" });
    if (response.ok) part.innerHTML = await response.text();
  }

  async function refresh(keys) {
    const parts = [...document.querySelectorAll("[data-live]")].filter(
      (part) => !keys || !part.dataset.stream || keys.includes(part.dataset.stream));
    for (const part of parts) await load(part);
  }

  document.addEventListener("focusout", (event) => {
    const part = event.target.closest("[data-live][data-stale]");
    if (part && !part.contains(event.relatedTarget)) load(part);
  });

  function moved(data) {
    if (data.log === null || data.log <= log) return false;
    log = data.log;
    return true;
  }

  const source = new EventSource("/events");
  source.addEventListener("hello", (event) => {
    const data = JSON.parse(event.data);
    connected(true);
    show(problem, data.problem);
    if (moved(data)) refresh(null); // changes made while this page was not listening
  });
  source.addEventListener("changed", (event) => {
    const data = JSON.parse(event.data);
    if (moved(data)) refresh(data.keys);
  });
  source.addEventListener("store", (event) => {
    const data = JSON.parse(event.data);
    show(problem, data.problem ? "The store does not answer: " + data.problem : "");
  });
  source.addEventListener("error", () => connected(false));

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-decision")) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    document.activeElement.blur(); // done typing: this part may be refreshed again
    const response = await fetch(form.action, {
      method: "POST",
      body,
      headers: { Accept: "application/json" },
    });
    const answer = await response.json();
    show(notice, answer.message, !answer.ok);
  });
})();
