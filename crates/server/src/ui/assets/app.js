// flowrun dashboard. The pages work without this file; it shows times in the viewer's zone and follows
// runs that are still going.
"use strict";

(function () {
  var thisYear = new Date().getFullYear();
  var clock = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  var sameYear = new Intl.DateTimeFormat(undefined, Object.assign({ month: "short", day: "numeric" }, clock));
  var otherYear = new Intl.DateTimeFormat(undefined,
    Object.assign({ year: "numeric", month: "short", day: "numeric" }, clock));

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) return;
      if (!el.title) el.title = el.textContent;
      el.textContent = (at.getFullYear() === thisYear ? sameYear : otherYear).format(at);
    });
    var note = document.getElementById("zone-note");
    if (note) {
      var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";
      note.textContent = /^(Etc\/)?UTC$/.test(zone)
        ? "Times in UTC."
        : "Times in " + zone + "; hover a time for UTC.";
    }
  }

  // A notice belongs to the action that led here: drop it from the address so a reload does not repeat it.
  function forgetNotice() {
    var url = new URL(window.location.href);
    if (!url.searchParams.has("notice")) return;
    url.searchParams.delete("notice");
    url.searchParams.delete("run");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  function durationText(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
    return Math.floor(ms / 3600000) + " h " + Math.floor((ms % 3600000) / 60000) + " min";
  }

  // Elements with data-live follow their run; once it ends the page is loaded again, so what is shown
  // is the server's rendering of the finished run.
  function follow(el) {
    var url = el.getAttribute("data-live");
    var output = el.id === "run" ? document.getElementById("output") : null;
    var duration = el.id === "run" ? document.getElementById("run-duration") : null;
    var started = null;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.json() : null;
        })
        .then(function (run) {
          if (!run) { setTimeout(poll, 5000); return; }
          if (run.status === "success" || run.status === "failed") { window.location.reload(); return; }
          if (output && typeof run.output === "string" && output.textContent !== run.output) {
            var atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
            output.textContent = run.output;
            if (atBottom) output.scrollTop = output.scrollHeight;
          }
          if (duration && run.started_at) {
            started = started || new Date(run.started_at);
            duration.textContent = durationText(Math.max(0, Date.now() - started.getTime())) + " so far";
          }
          setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    }
    setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    forgetNotice();
    document.querySelectorAll("[data-live]").forEach(follow);
  });
})();
