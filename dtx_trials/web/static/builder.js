// Live preview of branching conditions and calculations in the protocol builder: each input
// marked data-preview is evaluated on the server's form engine (the same engine that runs the
// forms) against the sample values, and the result or the error is written next to it.
(function () {
  "use strict";
  var form = document.getElementById("builder");
  if (!form) { return; }
  var url = form.getAttribute("data-preview-url");
  var csrf = form.getAttribute("data-csrf");
  var sample = document.getElementById("b-sample");
  var timers = {};

  function preview(input) {
    var out = document.getElementById(input.getAttribute("data-preview"));
    if (!input.value.trim()) { out.textContent = ""; return; }
    var values = {};
    try { values = JSON.parse(sample.value || "{}"); } catch (e) { out.textContent = "sample: " + e.message; return; }
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({expression: input.value, values: values})
    }).then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
      .then(function (res) {
        var body = res[1];
        out.textContent = res[0] === 200 ? "→ " + body.text
          : "⚠ " + ((body.errors && (body.errors.expression || body.errors.values)) || ["?"]).join("; ");
        out.setAttribute("data-ok", res[0] === 200 ? "1" : "0");
      });
  }

  function schedule(input) {
    clearTimeout(timers[input.id]);
    timers[input.id] = setTimeout(function () { preview(input); }, 250);
  }

  var inputs = form.querySelectorAll("[data-preview]");
  inputs.forEach(function (input) {
    input.addEventListener("input", function () { schedule(input); });
  });
  sample.addEventListener("input", function () { inputs.forEach(schedule); });
})();
