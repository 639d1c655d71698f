/* metacrm admin: reference pickers (autocomplete over /lookup), select-all, confirmations.
   Plain JavaScript, no dependencies. */
(function () {
  "use strict";

  function debounce(fn, wait) {
    var timer = null;
    return function () {
      var args = arguments;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(null, args); }, wait);
    };
  }

  function Picker(root) {
    this.root = root;
    this.many = root.classList.contains("mc-many");
    this.name = root.getAttribute("data-name");
    this.url = root.getAttribute("data-lookup");
    this.search = root.querySelector(".mc-search");
    this.options = root.querySelector(".mc-options");
    this.value = this.many ? null : root.querySelector('input[type="hidden"]');
    this.chosen = this.many ? root.querySelector(".mc-chosen") : null;
    this.items = [];
    this.active = -1;
    this.request = 0;
    if (!this.search || !this.url) { return; }
    var self = this;
    var lookup = debounce(function () { self.fetch(); }, 200);
    this.search.addEventListener("input", function () {
      if (!self.many && !self.search.value.trim()) { self.value.value = ""; }
      lookup();
    });
    this.search.addEventListener("focus", function () { if (!self.search.value) { self.fetch(); } });
    this.search.addEventListener("keydown", function (event) { self.key(event); });
    this.search.addEventListener("blur", function () {
      setTimeout(function () { self.close(); }, 150);
    });
    var clear = root.querySelector(".mc-clear");
    if (clear) {
      clear.addEventListener("click", function () {
        self.value.value = "";
        self.search.value = "";
        self.search.focus();
      });
    }
    root.addEventListener("click", function (event) {
      var remove = event.target.closest(".mc-remove");
      if (remove) { remove.closest(".mc-chip").remove(); self.search.focus(); }
    });
  }

  Picker.prototype.fetch = function () {
    var self = this;
    var number = ++this.request;
    var url = this.url + "?q=" + encodeURIComponent(this.search.value.trim());
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("application/json") !== 0) { return {items: []}; }
        return response.json();
      })
      .then(function (body) { if (number === self.request) { self.show(body.items || []); } })
      .catch(function () { self.show([]); });
  };

  Picker.prototype.show = function (items) {
    var self = this;
    this.items = items;
    this.active = -1;
    this.options.innerHTML = "";
    if (!items.length) {
      var empty = document.createElement("li");
      empty.className = "list-group-item text-muted";
      empty.textContent = this.root.getAttribute("data-empty") || "";
      this.options.appendChild(empty);
    }
    items.forEach(function (item, index) {
      var option = document.createElement("li");
      option.className = "list-group-item";
      option.id = self.search.id + "-option-" + index;
      option.setAttribute("role", "option");
      option.setAttribute("data-id", item.id);
      option.textContent = item.title;
      option.addEventListener("mousedown", function (event) {
        event.preventDefault();
        self.choose(index);
      });
      self.options.appendChild(option);
    });
    this.options.hidden = false;
    this.search.setAttribute("aria-expanded", "true");
  };

  Picker.prototype.close = function () {
    this.options.hidden = true;
    this.search.setAttribute("aria-expanded", "false");
    this.search.removeAttribute("aria-activedescendant");
  };

  Picker.prototype.highlight = function (index) {
    var nodes = this.options.querySelectorAll('[role="option"]');
    if (!nodes.length) { return; }
    this.active = (index + nodes.length) % nodes.length;
    nodes.forEach(function (node, i) {
      node.classList.toggle("active", i === this.active);
      node.setAttribute("aria-selected", i === this.active ? "true" : "false");
    }, this);
    this.search.setAttribute("aria-activedescendant", nodes[this.active].id);
  };

  Picker.prototype.key = function (event) {
    if (event.key === "ArrowDown") { event.preventDefault(); if (this.options.hidden) { this.fetch(); } else { this.highlight(this.active + 1); } }
    else if (event.key === "ArrowUp") { event.preventDefault(); this.highlight(this.active - 1); }
    else if (event.key === "Enter" && !this.options.hidden && this.active >= 0) { event.preventDefault(); this.choose(this.active); }
    else if (event.key === "Escape") { this.close(); }
  };

  Picker.prototype.choose = function (index) {
    var item = this.items[index];
    if (!item) { return; }
    if (this.many) {
      if (!this.chosen.querySelector('.mc-chip[data-id="' + item.id + '"]')) {
        var chip = document.createElement("li");
        chip.className = "list-inline-item badge badge-secondary mc-chip";
        chip.setAttribute("data-id", item.id);
        var hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = this.name;
        hidden.value = item.id;
        var label = document.createElement("span");
        label.textContent = item.title;
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "close mc-remove";
        remove.setAttribute("aria-label", (this.root.getAttribute("data-remove") || "Remove") + " " + item.title);
        remove.innerHTML = "&times;";
        chip.appendChild(hidden);
        chip.appendChild(label);
        chip.appendChild(remove);
        this.chosen.appendChild(chip);
      }
      this.search.value = "";
    } else {
      this.value.value = item.id;
      this.search.value = item.title;
    }
    this.close();
  };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".mc-picker").forEach(function (root) { new Picker(root); });
    document.querySelectorAll(".mc-select-all").forEach(function (box) {
      box.addEventListener("change", function () {
        box.closest("form").querySelectorAll(".mc-select").forEach(function (one) { one.checked = box.checked; });
      });
    });
    document.querySelectorAll("[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });
}());
