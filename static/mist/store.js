// Progressive enhancement only: every page works without this file.
// While an archive is being prepared, reload now and then so its download link appears by itself.
(function () {
  "use strict";
  if (!document.querySelector("[data-preparing]")) return;
  window.setTimeout(function () {
    var active = document.activeElement;
    // Never yank the page away from someone typing or using a control.
    if (active && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName)) return;
    window.location.reload();
  }, 15000);
})();
