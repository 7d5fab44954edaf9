// Live updates of a run page: listen to the run's events (cookie-authenticated Server-Sent Events)
// and, after each burst of events, fetch the run's body rendered on the server and swap it in.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.events || typeof EventSource === "undefined") { return; }
  var types = ["run.started", "candidate.proposed", "candidate.evaluated", "candidate.new_best",
               "run.completed", "run.failed", "run.cancelled"];
  var finals = ["run.completed", "run.failed", "run.cancelled"];
  var source = new EventSource(live.dataset.events);
  var timer = null;

  function refresh() {
    timer = null;
    fetch(live.dataset.partial + window.location.search, { credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected) { window.location.reload(); return null; }  // the session ended: show the login
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () { /* the next event tries again */ });
  }

  function onEvent(event) {
    if (finals.indexOf(event.type) >= 0) {
      source.close();
      if (timer) { clearTimeout(timer); }
      refresh();
      return;
    }
    if (!timer) { timer = setTimeout(refresh, 400); }
  }

  types.forEach(function (type) { source.addEventListener(type, onEvent); });
})();
