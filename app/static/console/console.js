// Dates arrive as UTC ISO in <time datetime>; show them in the viewer's time zone.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) return;
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.title = el.textContent;
      el.textContent = format.format(when);
      el.dataset.local = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  // New content swapped in by HTMX (polled track lists) is localised too.
  document.addEventListener("htmx:load", function (e) { localise(e.detail.elt); });
})();

// The catalogue page's uploader: one request per file, in turn, each with its progress bar
// and its answer (the new track's status, or the error in the API's words). Accepted files
// refresh the track list, which then polls pending tracks until indexed or failed.
(function () {
  "use strict";
  function title(name) {
    var dot = name.lastIndexOf(".");
    return (dot > 0 ? name.slice(0, dot) : name).slice(0, 500) || name;
  }
  function row(list, file) {
    var li = document.createElement("li");
    li.dataset.state = "waiting";
    li.dataset.file = file.name;
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    var state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting";
    li.append(name, bar, state);
    list.appendChild(li);
    return li;
  }
  // One refresh of the track list at a time; one asked for meanwhile runs after it (so the
  // list always ends up showing every accepted file).
  var refreshing = false;
  var again = false;
  function refresh() {
    if (!window.htmx || !document.getElementById("tracks")) return;
    if (refreshing) { again = true; return; }
    refreshing = true;
    var settle = function () {
      refreshing = false;
      if (again) { again = false; refresh(); }
    };
    window.htmx.ajax("GET", window.location.pathname + window.location.search,
      { target: "#tracks", select: "#tracks", swap: "outerHTML" }).then(settle, settle);
  }
  function send(form, file, artist, li, next) {
    var bar = li.querySelector("progress");
    var state = li.querySelector(".state");
    var body = new FormData();
    body.append("file", file);
    body.append("title", title(file.name));
    body.append("artist", artist);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.action);
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      bar.value = Math.round((100 * e.loaded) / e.total);
      state.textContent = "uploading " + bar.value + "%";
    };
    xhr.onload = function () {
      var answer = xhr.response || {};
      bar.value = 100;
      if (xhr.status === 202 && answer.id) {
        li.dataset.state = "done";
        li.dataset.trackId = answer.id;
        state.textContent = "uploaded: " + answer.status;
        refresh();
      } else {
        li.dataset.state = "error";
        state.textContent = (answer.error && answer.error.message) ||
          "the upload was refused (HTTP " + xhr.status + ")";
      }
      next();
    };
    xhr.onerror = function () {
      li.dataset.state = "error";
      state.textContent = "the connection failed before the upload finished; try again";
      next();
    };
    li.dataset.state = "uploading";
    state.textContent = "uploading";
    xhr.send(body);
  }
  // Each accepted file follows its track's status as the polled list shows it.
  function follow() {
    document.querySelectorAll("#uploads li[data-track-id]").forEach(function (li) {
      var row = document.querySelector("tr[data-track-id='" + li.dataset.trackId + "']");
      var badge = row && row.querySelector(".badge");
      if (!badge) return;
      var reason = row.querySelector(".error");
      li.dataset.trackStatus = badge.textContent;
      li.querySelector(".state").textContent = "uploaded: " + badge.textContent +
        (reason ? " (" + reason.textContent + ")" : "");
    });
  }
  document.addEventListener("htmx:load", follow);
  function uploader(form) {
    var list = document.getElementById("uploads");
    var input = form.querySelector("input[type=file]");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var artist = form.querySelector("input[name=artist]").value;
      var files = Array.prototype.slice.call(input.files);
      var rows = files.map(function (file) { return row(list, file); });
      input.value = "";
      var i = 0;
      // In turn, not at once: the service bounds each key's uploads in progress.
      (function next() {
        if (i >= files.length) return;
        var k = i++;
        send(form, files[k], artist, rows[k], next);
      })();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("uploader");
    if (form) uploader(form);
  });
})();
