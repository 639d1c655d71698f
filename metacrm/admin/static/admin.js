/* metacrm admin: reference pickers (autocomplete over /lookup), live form conditions,
   select-all, confirmations. Plain JavaScript, no dependencies. */
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
        self.changed();
        self.search.focus();
      });
    }
    root.addEventListener("click", function (event) {
      var remove = event.target.closest(".mc-remove");
      if (remove) { remove.closest(".mc-chip").remove(); self.changed(); self.search.focus(); }
    });
  }

  /* A value set by script fires no event: tell the form (its conditions) it changed. */
  Picker.prototype.changed = function () {
    this.root.dispatchEvent(new Event("change", {bubbles: true}));
  };

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
    this.changed();
    this.close();
  };

  /* Live form conditions. The server embeds each `visible_when` / `read_only_when` as JSON
     (data-visible-when, data-read-only-when) and the type of each field they test
     (data-condition-fields on the form: {name: {type, value?}}; without a value, the
     form's input holds it). As the visitor types, the conditions the browser can decide
     are evaluated again: eq, ne, in, not_in, is_empty, and gt, gte, lt, lte on numbers,
     nested in all / any / not, on text, number, enum, boolean, reference, user and date
     fields. A condition using anything else (another operator, a path through a
     reference, a field the visitor may not read) keeps the server's answer. The server
     evaluates every condition again on what is sent and alone decides what is written. */
  var NUMBERS = {integer: 1, decimal: 1, money: 1};
  var SCALARS = {string: 1, text: 1, email: 1, phone: 1, url: 1, autonumber: 1, uuid: 1,
                 enum: 1, boolean: 1, reference: 1, user: 1, date: 1,
                 integer: 1, decimal: 1, money: 1};
  var ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

  function Unsupported(reason) { this.reason = reason; }

  function LiveForm(form) {
    this.form = form;
    this.fields = JSON.parse(form.getAttribute("data-condition-fields") || "{}");
    this.rules = [];
    var self = this;
    form.querySelectorAll("[data-visible-when], [data-read-only-when]").forEach(function (node) {
      [["visible", "data-visible-when"], ["read_only", "data-read-only-when"]].forEach(function (kind) {
        var text = node.getAttribute(kind[1]);
        if (text === null) { return; }
        var condition = JSON.parse(text);
        try {
          self.check(condition);
          self.rules.push({node: node, kind: kind[0], condition: condition});
          node.setAttribute("data-live", "yes");
        } catch (error) {
          if (!(error instanceof Unsupported)) { throw error; }
          node.setAttribute("data-live", "no");  // the server's answer stays
          node.setAttribute("data-live-reason", error.reason);
        }
      });
    });
    if (!this.rules.length) { return; }
    var update = function () { self.update(); };
    form.addEventListener("input", update);
    form.addEventListener("change", update);
  }

  /* Throws Unsupported unless the browser can evaluate every part of `condition`. */
  LiveForm.prototype.check = function (condition) {
    var self = this;
    if (condition === null || typeof condition !== "object") { throw new Unsupported("shape"); }
    if (Array.isArray(condition.all) || Array.isArray(condition.any)) {
      (condition.all || condition.any).forEach(function (part) { self.check(part); });
      return;
    }
    if ("not" in condition) { this.check(condition.not); return; }
    var name = condition.field, op = condition.op, value = condition.value;
    var field = this.fields[name];
    if (typeof name !== "string" || !field) { throw new Unsupported("field " + name); }
    if (!SCALARS[field.type]) { throw new Unsupported("type " + field.type); }
    if (!("value" in field) && !this.input(name)) { throw new Unsupported("no input " + name); }
    if (op === "is_empty") {
      if (typeof value !== "boolean") { throw new Unsupported("is_empty value"); }
      return;
    }
    if (op === "gt" || op === "gte" || op === "lt" || op === "lte") {
      if (!NUMBERS[field.type]) { throw new Unsupported(op + " on " + field.type); }
      this.operand(field.type, value);
      return;
    }
    if (op === "in" || op === "not_in") {
      if (!Array.isArray(value)) { throw new Unsupported(op + " value"); }
      value.forEach(function (one) { self.operand(field.type, one); });
      return;
    }
    if (op === "eq" || op === "ne") { this.operand(field.type, value); return; }
    throw new Unsupported("operator " + op);
  };

  /* A condition's value in the form the field's values take (Unsupported if it cannot be). */
  LiveForm.prototype.operand = function (type, value) {
    if (NUMBERS[type] || type === "reference" || type === "user") {
      var number = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof number !== "number" || !isFinite(number)) { throw new Unsupported("number"); }
      return number;
    }
    if (type === "boolean") {
      if (typeof value !== "boolean") { throw new Unsupported("boolean"); }
      return value;
    }
    if (type === "date" && !(typeof value === "string" && ISO_DATE.test(value))) {
      throw new Unsupported("date");  // relative dates (today...) stay with the server
    }
    if (typeof value !== "string") { throw new Unsupported("text"); }
    return value;
  };

  LiveForm.prototype.input = function (name) {
    var wrapper = this.form.querySelector('.mc-field[data-field="' + name + '"]');
    if (!wrapper) { return null; }
    return wrapper.querySelector('[name="' + name + '"]');
  };

  /* The field's current value (null: no value), typed like the condition's operands. */
  LiveForm.prototype.value = function (name) {
    var field = this.fields[name];
    var raw;
    if ("value" in field) { raw = field.value; }
    else {
      var input = this.input(name);
      if (field.type === "boolean") { return input.type === "checkbox" ? input.checked : input.value === "y"; }
      raw = input.value;
    }
    if (raw === null || raw === undefined) { return null; }
    if (typeof raw === "string" && field.type !== "text") { raw = raw.trim(); }
    if (raw === "") { return null; }
    if (NUMBERS[field.type] || field.type === "reference" || field.type === "user") {
      var number = Number(raw);
      return isFinite(number) ? number : null;
    }
    return field.type === "boolean" ? Boolean(raw) : String(raw);
  };

  /* Whether `condition` holds; a test on no value follows the server (ne, not_in hold). */
  LiveForm.prototype.holds = function (condition) {
    var self = this;
    if (Array.isArray(condition.all)) { return condition.all.every(function (c) { return self.holds(c); }); }
    if (Array.isArray(condition.any)) { return condition.any.some(function (c) { return self.holds(c); }); }
    if ("not" in condition) { return !this.holds(condition.not); }
    var type = this.fields[condition.field].type, op = condition.op;
    var found = this.value(condition.field);
    if (op === "is_empty") { return (found === null) === condition.value; }
    if (found === null) { return op === "ne" || op === "not_in"; }
    if (op === "in" || op === "not_in") {
      var listed = condition.value.some(function (one) { return self.operand(type, one) === found; });
      return op === "in" ? listed : !listed;
    }
    var value = this.operand(type, condition.value);
    switch (op) {
      case "eq": return found === value;
      case "ne": return found !== value;
      case "gt": return found > value;
      case "gte": return found >= value;
      case "lt": return found < value;
      default: return found <= value;  // lte
    }
  };

  LiveForm.prototype.update = function () {
    var self = this;
    this.rules.forEach(function (rule) {
      var holds = self.holds(rule.condition);
      if (rule.kind === "visible") { rule.node.hidden = !holds; }
      else { self.readOnly(rule.node, holds); }
    });
  };

  /* Make a field read-only (its inputs disabled: not sent) or editable again. */
  LiveForm.prototype.readOnly = function (wrapper, locked) {
    wrapper.setAttribute("data-mode", locked ? "read_only" : "edit");
    wrapper.querySelectorAll("input, select, textarea, button.mc-clear, button.mc-remove").forEach(function (node) {
      node.disabled = locked;
    });
    wrapper.querySelectorAll(".mc-read-only-note").forEach(function (note) { note.hidden = !locked; });
    wrapper.querySelectorAll(".mc-required").forEach(function (mark) { mark.hidden = locked; });
  };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".mc-picker").forEach(function (root) { new Picker(root); });
    document.querySelectorAll("form[data-condition-fields]").forEach(function (form) { new LiveForm(form); });
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
