/*
 * ePRO page behaviour (no inline script: CSP). Shows or hides questions live with the
 * protocol's show_if expressions (DtxExpr from /static/ecrf/expressions.js), mirrors slider
 * values, and records the device's clock with its UTC offset at submission. The server
 * re-validates everything; this only makes the page pleasant.
 */
(function () {
  'use strict';

  function pad(n) {
    return (n < 10 ? '0' : '') + n;
  }

  function localIso(d) {
    var offset = -d.getTimezoneOffset();
    var sign = offset >= 0 ? '+' : '-';
    offset = Math.abs(offset);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) +
      'T' + pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) +
      sign + pad(Math.floor(offset / 60)) + ':' + pad(offset % 60);
  }

  function fieldValue(box) {
    var type = box.getAttribute('data-type');
    var inputs = box.querySelectorAll('input, textarea, select');
    var i;
    if (type === 'multiple_choice') {
      var codes = [];
      for (i = 0; i < inputs.length; i += 1) {
        if (inputs[i].checked) { codes.push(inputs[i].value); }
      }
      return codes;
    }
    for (i = 0; i < inputs.length; i += 1) {
      var input = inputs[i];
      if (input.hasAttribute('data-empty')) {
        return null;
      }
      if (input.type === 'radio' || input.type === 'checkbox') {
        if (input.checked) { return input.value; }
      } else if (input.value !== '') {
        if (type === 'integer' || type === 'decimal' || type === 'slider') {
          var number = Number(input.value);
          return isNaN(number) ? input.value : number;
        }
        return input.value;
      }
    }
    return null;
  }

  function refresh(form) {
    var boxes = form.querySelectorAll('[data-field]');
    var expr = window.DtxExpr;
    if (!expr) { return; }
    // two passes: hiding one question can change whether a later one is asked
    for (var pass = 0; pass < 2; pass += 1) {
      var values = {};
      var i;
      for (i = 0; i < boxes.length; i += 1) {
        if (!boxes[i].hidden) {
          values[boxes[i].getAttribute('data-field')] = fieldValue(boxes[i]);
        }
      }
      for (i = 0; i < boxes.length; i += 1) {
        var condition = boxes[i].getAttribute('data-show-if');
        if (!condition) { continue; }
        var shown = true;
        try {
          shown = expr.truthy(expr.evaluate(condition, values));
        } catch (err) {
          shown = true;
        }
        boxes[i].hidden = !shown;
        var inputs = boxes[i].querySelectorAll('input, textarea, select');
        for (var j = 0; j < inputs.length; j += 1) { inputs[j].disabled = !shown; }
      }
    }
  }

  function mirrorSliders(form) {
    var outputs = form.querySelectorAll('output[data-for]');
    for (var i = 0; i < outputs.length; i += 1) {
      var slider = document.getElementById(outputs[i].getAttribute('data-for'));
      if (slider && !slider.hasAttribute('data-empty')) { outputs[i].textContent = slider.value; }
    }
  }

  // A range input always has a value; an untouched slider must not answer for the participant,
  // so it is left out of the submission until it is moved.
  function holdUntouchedSliders(form) {
    var sliders = form.querySelectorAll('input[type=range][data-empty]');
    for (var i = 0; i < sliders.length; i += 1) {
      sliders[i].setAttribute('data-name', sliders[i].name);
      sliders[i].removeAttribute('name');
      sliders[i].addEventListener('input', function (event) {
        var slider = event.target;
        if (slider.hasAttribute('data-empty')) {
          slider.name = slider.getAttribute('data-name');
          slider.removeAttribute('data-empty');
        }
      });
    }
  }

  function start() {
    var form = document.getElementById('epro-form');
    if (!form) { return; }
    holdUntouchedSliders(form);
    form.addEventListener('input', function () { mirrorSliders(form); refresh(form); });
    form.addEventListener('change', function () { refresh(form); });
    form.addEventListener('submit', function () {
      var clock = document.getElementById('device_time');
      if (clock) { clock.value = localIso(new Date()); }
    });
    refresh(form);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
