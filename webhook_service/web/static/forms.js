/* Form behaviour without inline handlers (the Content-Security-Policy allows only scripts from /dashboard/static):
   a <select data-autosubmit> submits its form when it changes. */
(function () {
  "use strict";
  var selects = document.querySelectorAll("select[data-autosubmit]");
  Array.prototype.forEach.call(selects, function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
