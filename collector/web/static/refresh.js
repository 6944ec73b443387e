// Live pages reload themselves every data-refresh seconds, but not while someone is using a
// form on them (a reload would throw away what they chose) nor while the tab is hidden.
// Without JavaScript the <noscript> meta refresh does the reloading instead.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) {
    return;
  }
  var busy = false;
  document.addEventListener("focusin", function (event) {
    busy = Boolean(event.target.closest && event.target.closest("form"));
  });
  document.addEventListener("focusout", function () {
    busy = false;
  });
  function tick() {
    if (busy || document.visibilityState === "hidden") {
      window.setTimeout(tick, 1000);
      return;
    }
    window.location.reload();
  }
  window.setTimeout(tick, seconds * 1000);
})();
