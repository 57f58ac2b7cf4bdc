// Keyboard rating for the review page. The page works without this file (plain form posts);
// this only adds shortcuts and a check before saving. It never builds HTML from text: messages
// are set with textContent, so nothing a model wrote can become markup here.
(function () {
  "use strict";

  var form = document.getElementById("rating-form");
  if (!form) return;

  var criteria = Array.prototype.slice.call(form.querySelectorAll(".criterion"));
  var clientError = document.getElementById("client-error");
  var active = 0;

  function checkedValue(name) {
    var input = form.querySelector('input[name="' + name + '"]:checked');
    return input ? input.value : null;
  }

  function setActive(index, quiet) {
    if (!criteria.length) return;
    active = (index + criteria.length) % criteria.length;
    criteria.forEach(function (el, k) { el.classList.toggle("active", k === active); });
    if (!quiet) criteria[active].scrollIntoView({ block: "nearest" });
  }

  function firstUnscored() {
    for (var k = 0; k < criteria.length; k++) {
      if (checkedValue(criteria[k].dataset.field) === null) return k;
    }
    return -1;
  }

  function choose(name, value) {
    var input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (input) {
      input.checked = true;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function showError(message) {
    clientError.textContent = message;
    clientError.hidden = !message;
  }

  function missing() {
    var k = firstUnscored();
    if (k >= 0) {
      setActive(k);
      var name = criteria[k].querySelector(".criterion-name").textContent;
      var side = criteria[k].dataset.field.indexOf("left") === 0 ? "left" : "right";
      return "Score " + name.toLowerCase() + " of the " + side + " answer (keys 1 to 5).";
    }
    if (checkedValue("prefer") === null) return "Choose which answer is better: A (left), S (tie) or D (right).";
    return null;
  }

  function save() {
    var problem = missing();
    showError(problem || "");
    if (!problem) form.requestSubmit ? form.requestSubmit() : form.submit();
  }

  function follow(id) {
    var link = document.getElementById(id);
    if (link) window.location.href = link.href;
  }

  form.addEventListener("submit", function (ev) {
    var problem = missing();
    if (problem) { ev.preventDefault(); showError(problem); }
  });

  criteria.forEach(function (el, k) {
    el.addEventListener("change", function () { setActive(k, true); showError(""); });
  });

  document.addEventListener("keydown", function (ev) {
    var target = ev.target;
    var typing = target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text");
    if (typing) {
      if (ev.key === "Escape") target.blur();
      else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); save(); }
      return;
    }
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "Enter" && (target.tagName === "A" || target.tagName === "BUTTON")) return;
    var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    var handled = true;
    if (key >= "1" && key <= "5" && key.length === 1) {
      choose(criteria[active].dataset.field, key);
      var next = firstUnscored();
      setActive(next >= 0 ? next : active + 1);
    } else if (key === "j") setActive(active + 1);
    else if (key === "k") setActive(active - 1);
    else if (key === "a" || key === "ArrowLeft") choose("prefer", "left");
    else if (key === "s") choose("prefer", "tie");
    else if (key === "d" || key === "ArrowRight") choose("prefer", "right");
    else if (key === "c") document.getElementById("comment").focus();
    else if (key === "Enter") save();
    else if (key === "n") follow("next-link");
    else if (key === "p") follow("prev-link");
    else if (key === "?") document.getElementById("keys").classList.toggle("open");
    else handled = false;
    if (handled) ev.preventDefault();
  });

  var start = firstUnscored();
  setActive(start >= 0 ? start : 0, true);  // no scrolling on load: the prompt comes first
})();
