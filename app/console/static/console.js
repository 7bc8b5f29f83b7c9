// Progressive enhancement for the console; every page works without it.
(function () {
  "use strict";

  // A dependent field shows only while its parent is on (a checkbox checked, or a radio
  // group at the value named by data-show-value).
  function refreshDependents(root) {
    root.querySelectorAll("[data-show-when]").forEach(function (block) {
      var name = block.getAttribute("data-show-when");
      var wanted = block.getAttribute("data-show-value");
      var controls = document.getElementsByName(name);
      var on = false;
      controls.forEach(function (control) {
        if (control.checked && (!wanted || control.value === wanted)) { on = true; }
      });
      block.hidden = !on;
    });
  }

  // A chip inserts its variable where the cursor is in the title field, then tells the
  // form it changed (which refreshes the previews).
  function insertAtCursor(field, text) {
    var start = field.selectionStart != null ? field.selectionStart : field.value.length;
    var end = field.selectionEnd != null ? field.selectionEnd : field.value.length;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    var caret = start + text.length;
    field.focus();
    field.setSelectionRange(caret, caret);
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshDependents(document);
    document.addEventListener("change", function () { refreshDependents(document); });
    var title = document.getElementById("record_title_template");
    var lastCaret = null;
    if (title) {
      ["keyup", "click", "select", "input"].forEach(function (kind) {
        title.addEventListener(kind, function () { lastCaret = [title.selectionStart, title.selectionEnd]; });
      });
    }
    document.querySelectorAll("[data-insert]").forEach(function (chip) {
      chip.addEventListener("click", function () {
        if (!title) { return; }
        if (lastCaret) { title.setSelectionRange(lastCaret[0], lastCaret[1]); }
        insertAtCursor(title, chip.getAttribute("data-insert"));
        lastCaret = [title.selectionStart, title.selectionEnd];
      });
    });
  });

  // Changes carry the session's CSRF token as a header too (htmx requests).
  document.addEventListener("htmx:configRequest", function (event) {
    var field = document.querySelector("input[name=csrf_token]");
    if (field) { event.detail.headers["X-CSRF-Token"] = field.value; }
  });
})();
