/*
 * Live branching and derived fields on e-form pages.
 *
 * Each field wrapper carries data-field, data-type and optionally data-show-if (a dtx expression)
 * or data-calculation. On every input change the current values are collected, each show_if is
 * evaluated with DtxExpr.evaluate (ecrf/static/expressions.js) and the field is shown or hidden;
 * hidden fields are disabled so they are not submitted (the server clears them the same way).
 * The server remains the authority: it re-evaluates everything on save.
 */
(function () {
  'use strict';
  var form = document.getElementById('ecrf');
  if (!form || !window.DtxExpr) {
    return;
  }
  var today = form.getAttribute('data-today') || undefined;
  var wrappers = Array.prototype.slice.call(form.querySelectorAll('[data-field]'));

  function valueOf(wrapper) {
    var type = wrapper.getAttribute('data-type');
    var inputs = Array.prototype.slice.call(wrapper.querySelectorAll('input, select, textarea'))
      .filter(function (el) { return el.name === wrapper.getAttribute('data-field'); });
    if (type === 'multiple_choice') {
      return inputs.filter(function (el) { return el.checked; }).map(function (el) { return el.value; });
    }
    if (type === 'single_choice' || type === 'yesno') {
      var checked = inputs.filter(function (el) { return el.checked; })[0];
      return checked ? checked.value : null;
    }
    if (type === 'calculated') {
      var shown = wrapper.querySelector('input');
      return shown && shown.value !== '' ? shown.value : null;
    }
    var input = inputs[0];
    if (!input || input.value === '') {
      return null;
    }
    if ((type === 'integer' || type === 'decimal' || type === 'slider') && !isNaN(Number(input.value))) {
      return Number(input.value);
    }
    return input.value;
  }

  function collect() {
    var values = {};
    wrappers.forEach(function (wrapper) {
      if (!wrapper.hidden) {
        values[wrapper.getAttribute('data-field')] = valueOf(wrapper);
      }
    });
    return values;
  }

  function setShown(wrapper, shown) {
    if (wrapper.hidden === !shown) {
      return false;
    }
    wrapper.hidden = !shown;
    Array.prototype.forEach.call(wrapper.querySelectorAll('input, select, textarea'), function (el) {
      el.disabled = !shown;
    });
    return true;
  }

  function evaluate(text, values) {
    try {
      return window.DtxExpr.evaluate(text, values, { today: today });
    } catch (err) {
      return null;
    }
  }

  function refresh() {
    // hiding one field can change another's condition: repeat until nothing moves
    for (var round = 0; round <= wrappers.length; round += 1) {
      var values = collect();
      var changed = false;
      wrappers.forEach(function (wrapper) {
        var calculation = wrapper.getAttribute('data-calculation');
        if (calculation) {
          var result = evaluate(calculation, values);
          var output = wrapper.querySelector('input');
          var text = result === null || result === undefined ? '' : String(result);
          if (output && output.value !== text) {
            output.value = text;
            changed = true;
          }
        }
        var condition = wrapper.getAttribute('data-show-if');
        if (condition && setShown(wrapper, window.DtxExpr.truthy(evaluate(condition, values)))) {
          changed = true;
        }
      });
      if (!changed) {
        return;
      }
    }
  }

  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  refresh();
})();
