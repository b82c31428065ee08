/* flask_jobmetrics dashboard: while a page shows a running job, re-fetch it every few seconds
   and swap in the server-rendered #jm-live region (values stay escaped by the server).
   Stops as soon as the fresh page no longer asks for a refresh (the job finished). */
(function () {
  "use strict";
  var root = document.documentElement;
  var failures = 0;

  function live() { return document.getElementById("jm-live"); }

  function interval(node) {
    var ms = node ? parseInt(node.getAttribute("data-refresh-ms") || "0", 10) : 0;
    return ms > 0 ? ms : 0;
  }

  function schedule(ms) {
    if (ms > 0) {
      root.setAttribute("data-refresh-state", failures ? "retrying" : "live");
      window.setTimeout(tick, ms);
    } else {
      root.setAttribute("data-refresh-state", "stopped");
    }
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("jm-live");
    var current = live();
    if (!fresh || !current) return 0;
    var open = Array.prototype.map.call(current.querySelectorAll("details"), function (d) { return d.open; });
    fresh = document.importNode(fresh, true);
    Array.prototype.forEach.call(fresh.querySelectorAll("details"), function (d, i) {
      if (open[i]) d.open = true;
    });
    current.replaceWith(fresh);
    if (doc.title) document.title = doc.title;
    return interval(fresh);
  }

  function tick() {
    var current = live();
    var ms = interval(current);
    if (!ms) { schedule(0); return; }
    if (document.hidden) { schedule(ms); return; }
    fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        failures = 0;
        schedule(swap(html));
      })
      .catch(function () {
        failures += 1;
        schedule(Math.min(ms * Math.pow(2, failures), 30000));
      });
  }

  function start() { schedule(interval(live())); }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
