// The few behaviours htmx does not cover. No build step: this file is served as is.
(function () {
  "use strict";

  // Autocomplete: a suggestion button fills its input with the code (seed 000 paso 10c).
  document.addEventListener("click", function (event) {
    var pick = event.target.closest("[data-pick]");
    if (pick) {
      var box = pick.closest(".ac");
      var input = box && box.querySelector("input.ac-input");
      if (input) {
        input.value = pick.getAttribute("data-pick");
        var label = box.querySelector(".ac-label");
        if (label) label.textContent = pick.getAttribute("data-label") || "";
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
      var list = pick.closest(".ac-list");
      if (list) list.innerHTML = "";
      event.preventDefault();
      return;
    }
    var remove = event.target.closest("[data-remove]");
    if (remove) {
      var target = remove.closest(remove.getAttribute("data-remove"));
      if (target) target.remove();
      event.preventDefault();
      return;
    }
    var clear = event.target.closest("[data-clear]");
    if (clear) {
      var el = document.querySelector(clear.getAttribute("data-clear"));
      if (el) el.innerHTML = "";
    }
  });

  // Close suggestion lists with Escape.
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      document.querySelectorAll(".ac-list").forEach(function (list) { list.innerHTML = ""; });
    }
  });

  // Show/hide blocks that depend on a control (foreign customer, motive 01, issuing address…).
  function sync(root) {
    (root || document).querySelectorAll("[data-show-when]").forEach(function (block) {
      var spec = block.getAttribute("data-show-when").split("=");
      var control = document.querySelector(spec[0]);
      if (!control) return;
      var value = (control.type === "checkbox" || control.type === "radio") ? (control.checked ? "on" : "off") : control.value;
      var wanted = spec[1].split("|");
      block.hidden = wanted.indexOf(value) === -1;
    });
  }
  document.addEventListener("change", function (event) {
    // e.g. choosing PPD sets the payment form to 99 "Por definir" (CFDI40105)
    var setter = event.target.closest("[data-set]");
    if (setter && setter.checked !== false) {
      var spec = setter.getAttribute("data-set").split("=");
      var target = document.querySelector(spec[0]);
      if (target) target.value = spec[1];
    }
    sync();
  });
  document.addEventListener("DOMContentLoaded", function () { sync(); });
  document.addEventListener("htmx:afterSettle", function () { sync(); });
})();
