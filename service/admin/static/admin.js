// clipsearch admin: confirmations and live progress. No libraries; the pages work without it.
(function () {
  "use strict";

  // A form with data-confirm asks first (promote, rollback, cancel).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  function poll(url, apply, everyMs) {
    var stopped = false;
    function tick() {
      if (stopped) return;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); stopped = true; return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (body) { if (body && apply(body) === false) stopped = true; })
        .catch(function () {})
        .then(function () { if (!stopped) window.setTimeout(tick, everyMs); });
    }
    window.setTimeout(tick, everyMs);
  }

  function setBar(row, percent) {
    var bar = row.querySelector(".bar");
    if (!bar) return;
    bar.setAttribute("aria-valuenow", String(percent));
    bar.querySelector("span").style.width = percent + "%";
  }

  function text(row, selector, value) {
    var el = row.querySelector(selector);
    if (el) el.textContent = value;
  }

  var jobs = document.getElementById("jobs");
  if (jobs) {
    poll(jobs.getAttribute("data-poll"), function (body) {
      var changed = false;
      body.jobs.forEach(function (job) {
        var row = jobs.querySelector('tr.job[data-id="' + job.id + '"]');
        if (!row) { changed = true; return; }
        if (row.getAttribute("data-state") !== job.state) changed = true;
        setBar(row, job.percent);
        text(row, ".counts", job.done + " / " + job.total + (job.failed ? " · " + job.failed + " failed" : ""));
        text(row, ".rate", job.rate_per_s ? job.rate_per_s.toFixed(1) + "/s" : "");
        text(row, ".eta", job.eta || "");
      });
      // A new job, or a state that changes the actions offered: draw the page again.
      if (changed) window.location.reload();
    }, 1500);
  }

  var rollouts = document.getElementById("rollouts");
  if (rollouts) {
    poll(rollouts.getAttribute("data-poll"), function (body) {
      var changed = false;
      body.rollouts.forEach(function (r) {
        var card = rollouts.querySelector('article.rollout[data-id="' + r.id + '"]');
        if (!card) { changed = true; return; }
        if (card.getAttribute("data-state") !== r.state) changed = true;
        setBar(card, r.percent);
        text(card, ".done", String(r.done));
        text(card, ".rate", r.rate_per_s ? "· " + r.rate_per_s.toFixed(1) + "/s" : "");
        text(card, ".eta", r.eta ? "· ETA " + r.eta : "");
      });
      if (changed) window.location.reload();
    }, 1000);
  }

  var load = document.getElementById("load");
  if (load && document.body.getAttribute("data-page") === "overview") {
    poll("/admin/api/overview", function (body) {
      var tbody = load.querySelector("tbody");
      if (!body.load.length) return;
      tbody.textContent = "";
      body.load.forEach(function (row) {
        var tr = document.createElement("tr");
        [row.bundle, row.tower, row.queued.interactive || 0, row.queued.bulk || 0, row.items_per_s]
          .forEach(function (value, i) {
            var td = document.createElement("td");
            if (i === 0) { var code = document.createElement("code"); code.textContent = value; td.appendChild(code); }
            else td.textContent = String(value);
            tr.appendChild(td);
          });
        tbody.appendChild(tr);
      });
      var health = document.getElementById("health");
      health.textContent = body.ready ? "ready" : "not ready" + (body.detail.reason ? ": " + body.detail.reason : "");
      health.className = body.ready ? "ok" : "bad";
    }, 2000);
  }
})();
