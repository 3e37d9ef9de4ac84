/*
 * dtx-trials expression language for the browser (live branching, derived fields, checks).
 *
 * The same grammar and semantics as ecrf/expressions.py (its docstring is the specification);
 * tests/ecrf/expression_cases.json holds the cases both implementations must agree on.
 * Plain ES2017, no build step, never eval/Function: a tokenizer, a recursive-descent parser
 * producing a frozen syntax tree, and an interpreter.
 *
 *   DtxExpr.parse(text)                      -> {text, ast, references}   (throws ExpressionError)
 *   DtxExpr.evaluate(exprOrText, values, {visits, today: 'YYYY-MM-DD'}) -> null|boolean|number|string
 *   DtxExpr.truthy(value)                    -> boolean
 */
(function (root, factory) {
  'use strict';
  var api = factory();
  var isCommonJs = typeof module === 'object' && module && module.exports;
  if (isCommonJs) {
    module.exports = api;
  }
  if (typeof window !== 'undefined') {
    window.DtxExpr = api;
  } else if (!isCommonJs && root && typeof root === 'object') {
    root.DtxExpr = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : this, function () {
  'use strict';

  var MAX_NESTING = 32;
  var MAX_DEPTH = 100;
  var MAX_INSTANCE = 999999;
  var SAFE_INTEGER = 9007199254740992;

  var DATEDIFF_UNITS = {
    y: 86400 * 365.2425,
    M: 86400 * 30.44,
    d: 86400,
    h: 3600,
    m: 60,
    s: 1
  };

  var FUNCTIONS = {
    'if': [3, 3], datediff: [3, 5], sum: [1, null], mean: [1, null], median: [1, null],
    stdev: [1, null], min: [1, null], max: [1, null], round: [1, 2], roundup: [1, 2],
    rounddown: [1, 2], sqrt: [1, 1], abs: [1, 1], log: [1, 2], exp: [1, 1], mod: [2, 2],
    year: [1, 1], month: [1, 1], day: [1, 1], today: [0, 0], isblank: [1, 1],
    isblankormissingcode: [1, 1], hasmissingcode: [1, 1], isnumber: [1, 1], isinteger: [1, 1],
    contains: [2, 2], starts_with: [2, 2], ends_with: [2, 2], left: [2, 2], right: [2, 2],
    mid: [3, 3], length: [1, 1], concat: [1, null], lower: [1, 1], upper: [1, 1], trim: [1, 1],
    coalesce: [1, null]
  };

  var KEYWORDS = { and: true, or: true, not: true, 'true': true, 'false': true, 'null': true };
  var COMPARISONS = { '=': true, '==': true, '<>': true, '!=': true, '<': true, '>': true,
    '<=': true, '>=': true };
  var TWO_CHAR_OPS = ['<>', '<=', '>=', '!=', '=='];
  var ONE_CHAR_OPS = '=<>+-*/^(),';
  var WHITESPACE = ' \t\r\n';

  function has(object, key) {
    return Object.prototype.hasOwnProperty.call(object, key);
  }

  function isPlainObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function ExpressionError(message, expression, position) {
    var error = new Error(message + ' at column ' + (position + 1));
    error.name = 'ExpressionError';
    error.message = message + ' at column ' + (position + 1);
    error.reason = message;
    error.expression = expression;
    error.position = position;
    error.isExpressionError = true;
    return error;
  }

  // ------------------------------------------------------------------------- tokenizer

  var NUMBER_TOKEN = /[0-9]+(?:\.[0-9]*)?|\.[0-9]+/y;
  var IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
  var NAME_GROUP = /\[([A-Za-z_][A-Za-z0-9_-]*)(?:\(([A-Za-z0-9_.-]+)\))?\]/y;
  var INSTANCE_GROUP = /\[([0-9]+)\]/y;

  function matchAt(regex, text, pos) {
    regex.lastIndex = pos;
    return regex.exec(text);
  }

  function normaliseNumber(number) {
    if (typeof number !== 'number' || !isFinite(number)) {
      return null;
    }
    return number === 0 ? 0 : number;
  }

  function scanReference(text, pos) {
    var names = [];
    var instance = null;
    while (pos < text.length && text[pos] === '[') {
      if (instance !== null) {
        throw ExpressionError('nothing may follow an instance number', text, pos);
      }
      var named = matchAt(NAME_GROUP, text, pos);
      if (named) {
        if (names.length === 2) {
          throw ExpressionError('a reference has at most [visit][field]', text, pos);
        }
        names.push({ name: named[1], option: named[2] === undefined ? null : named[2], pos: pos });
        pos += named[0].length;
        continue;
      }
      var numbered = matchAt(INSTANCE_GROUP, text, pos);
      if (numbered && names.length) {
        var digits = numbered[1];
        if (digits.length > 6 || parseInt(digits, 10) < 1 || parseInt(digits, 10) > MAX_INSTANCE) {
          throw ExpressionError('instance number out of range', text, pos);
        }
        instance = parseInt(digits, 10);
        pos += numbered[0].length;
        continue;
      }
      throw ExpressionError('malformed field reference', text, pos);
    }
    if (names.length === 2) {
      if (names[0].option !== null) {
        throw ExpressionError('a visit name cannot carry a checkbox code', text, names[0].pos);
      }
      return { ref: makeReference(names[1].name, names[0].name, names[1].option, instance), pos: pos };
    }
    return { ref: makeReference(names[0].name, null, names[0].option, instance), pos: pos };
  }

  function makeReference(field, visit, option, instance) {
    return Object.freeze({ field: field, visit: visit, option: option, instance: instance });
  }

  function referenceKey(ref) {
    return JSON.stringify([ref.visit, ref.field, ref.option, ref.instance]);
  }

  function tokenize(text) {
    var tokens = [];
    var pos = 0;
    var n = text.length;
    while (pos < n) {
      var ch = text[pos];
      if (WHITESPACE.indexOf(ch) >= 0) {
        pos += 1;
        continue;
      }
      var start = pos;
      if (ch === '[') {
        var scanned = scanReference(text, pos);
        pos = scanned.pos;
        tokens.push({ kind: 'ref', text: text.slice(start, pos), position: start, value: scanned.ref });
        continue;
      }
      if (ch === "'" || ch === '"') {
        var end = text.indexOf(ch, pos + 1);
        if (end < 0) {
          throw ExpressionError('unterminated string', text, start);
        }
        tokens.push({ kind: 'str', text: text.slice(start, end + 1), position: start,
          value: text.slice(pos + 1, end) });
        pos = end + 1;
        continue;
      }
      var match = matchAt(NUMBER_TOKEN, text, pos);
      if (match) {
        var number = Number(match[0]);
        if (!isFinite(number)) {
          throw ExpressionError('number out of range', text, start);
        }
        tokens.push({ kind: 'num', text: match[0], position: start, value: normaliseNumber(number) });
        pos += match[0].length;
        continue;
      }
      match = matchAt(IDENT, text, pos);
      if (match) {
        tokens.push({ kind: 'ident', text: match[0], position: start });
        pos += match[0].length;
        continue;
      }
      var two = text.slice(pos, pos + 2);
      if (TWO_CHAR_OPS.indexOf(two) >= 0) {
        tokens.push({ kind: 'op', text: two, position: start });
        pos += 2;
        continue;
      }
      if (ONE_CHAR_OPS.indexOf(ch) >= 0) {
        tokens.push({ kind: 'op', text: ch, position: start });
        pos += 1;
        continue;
      }
      throw ExpressionError('unexpected character ' + JSON.stringify(ch), text, start);
    }
    tokens.push({ kind: 'end', text: '', position: n });
    return tokens;
  }

  // ------------------------------------------------------------------------- parser

  function node(fields) {
    return Object.freeze(fields);
  }

  function Parser(text) {
    this.text = text;
    this.tokens = tokenize(text);
    this.index = 0;
    this.nesting = 0;
    this.references = {};
  }

  Parser.prototype.current = function () {
    return this.tokens[this.index];
  };

  Parser.prototype.advance = function () {
    var token = this.tokens[this.index];
    if (token.kind !== 'end') {
      this.index += 1;
    }
    return token;
  };

  Parser.prototype.error = function (message, token) {
    return ExpressionError(message, this.text, (token || this.current()).position);
  };

  Parser.prototype.isKeyword = function (word) {
    var token = this.current();
    return token.kind === 'ident' && token.text.toLowerCase() === word;
  };

  Parser.prototype.isOp = function () {
    var token = this.current();
    if (token.kind !== 'op') {
      return false;
    }
    for (var i = 0; i < arguments.length; i += 1) {
      if (token.text === arguments[i]) {
        return true;
      }
    }
    return false;
  };

  Parser.prototype.enter = function (token) {
    this.nesting += 1;
    if (this.nesting > MAX_NESTING) {
      throw this.error('expression nested too deeply', token);
    }
  };

  Parser.prototype.describe = function (token) {
    if (token.kind === 'end') {
      return 'end of expression';
    }
    if (token.kind === 'ref') {
      return 'field reference ' + token.text;
    }
    return JSON.stringify(token.text);
  };

  Parser.prototype.parse = function () {
    if (this.current().kind === 'end') {
      throw this.error('empty expression');
    }
    var result = this.parseOr();
    if (this.current().kind !== 'end') {
      throw this.error('unexpected ' + this.describe(this.current()));
    }
    return result;
  };

  Parser.prototype.parseOr = function () {
    var result = this.parseAnd();
    while (this.isKeyword('or')) {
      var token = this.advance();
      result = node({ type: 'binary', op: 'or', left: result, right: this.parseAnd(),
        position: token.position });
    }
    return result;
  };

  Parser.prototype.parseAnd = function () {
    var result = this.parseNot();
    while (this.isKeyword('and')) {
      var token = this.advance();
      result = node({ type: 'binary', op: 'and', left: result, right: this.parseNot(),
        position: token.position });
    }
    return result;
  };

  Parser.prototype.parseNot = function () {
    if (this.isKeyword('not')) {
      var token = this.advance();
      this.enter(token);
      try {
        return node({ type: 'unary', op: 'not', operand: this.parseNot(), position: token.position });
      } finally {
        this.nesting -= 1;
      }
    }
    return this.parseComparison();
  };

  Parser.prototype.parseComparison = function () {
    var result = this.parseAdditive();
    var current = this.current();
    if (current.kind === 'op' && has(COMPARISONS, current.text)) {
      var token = this.advance();
      var op = token.text === '==' ? '=' : token.text === '!=' ? '<>' : token.text;
      result = node({ type: 'binary', op: op, left: result, right: this.parseAdditive(),
        position: token.position });
      current = this.current();
      if (current.kind === 'op' && has(COMPARISONS, current.text)) {
        throw this.error("comparisons cannot be chained; use 'and'");
      }
    }
    return result;
  };

  Parser.prototype.parseAdditive = function () {
    var result = this.parseMultiplicative();
    while (this.isOp('+', '-')) {
      var token = this.advance();
      result = node({ type: 'binary', op: token.text, left: result,
        right: this.parseMultiplicative(), position: token.position });
    }
    return result;
  };

  Parser.prototype.parseMultiplicative = function () {
    var result = this.parseUnary();
    while (this.isOp('*', '/')) {
      var token = this.advance();
      result = node({ type: 'binary', op: token.text, left: result, right: this.parseUnary(),
        position: token.position });
    }
    return result;
  };

  Parser.prototype.parseUnary = function () {
    if (this.isOp('-', '+')) {
      var token = this.advance();
      this.enter(token);
      try {
        return node({ type: 'unary', op: token.text, operand: this.parseUnary(),
          position: token.position });
      } finally {
        this.nesting -= 1;
      }
    }
    return this.parsePower();
  };

  Parser.prototype.parsePower = function () {
    var result = this.parsePrimary();
    if (this.isOp('^')) {
      var token = this.advance();
      result = node({ type: 'binary', op: '^', left: result, right: this.parseUnary(),
        position: token.position });
    }
    return result;
  };

  Parser.prototype.parsePrimary = function () {
    var token = this.current();
    if (token.kind === 'num') {
      this.advance();
      return node({ type: 'literal', value: token.value, position: token.position });
    }
    if (token.kind === 'str') {
      this.advance();
      return node({ type: 'literal', value: token.value === '' ? null : token.value,
        position: token.position });
    }
    if (token.kind === 'ref') {
      this.advance();
      this.references[referenceKey(token.value)] = token.value;
      return node({ type: 'ref', reference: token.value, position: token.position });
    }
    if (token.kind === 'op' && token.text === '(') {
      this.advance();
      this.enter(token);
      var inner;
      try {
        inner = this.parseOr();
      } finally {
        this.nesting -= 1;
      }
      this.expectClose(token);
      return inner;
    }
    if (token.kind === 'ident') {
      return this.parseName();
    }
    throw this.error('unexpected ' + this.describe(token));
  };

  Parser.prototype.expectClose = function (opening) {
    if (!this.isOp(')')) {
      if (this.current().kind === 'end') {
        throw this.error("missing ')'", opening);
      }
      throw this.error("expected ')' but found " + this.describe(this.current()));
    }
    this.advance();
  };

  Parser.prototype.parseName = function () {
    var token = this.advance();
    var word = token.text.toLowerCase();
    if (word === 'true' || word === 'false') {
      return node({ type: 'literal', value: word === 'true', position: token.position });
    }
    if (word === 'null') {
      return node({ type: 'literal', value: null, position: token.position });
    }
    if (has(KEYWORDS, word)) {
      throw this.error('unexpected ' + JSON.stringify(word), token);
    }
    if (!this.isOp('(')) {
      throw this.error('unknown name ' + JSON.stringify(token.text) +
        ' (field references need [brackets])', token);
    }
    if (!has(FUNCTIONS, word)) {
      throw this.error('unknown function ' + JSON.stringify(token.text), token);
    }
    var opening = this.advance();
    var args = [];
    this.enter(opening);
    try {
      if (!this.isOp(')')) {
        args.push(this.parseOr());
        while (this.isOp(',')) {
          this.advance();
          args.push(this.parseOr());
        }
      }
    } finally {
      this.nesting -= 1;
    }
    this.expectClose(opening);
    var low = FUNCTIONS[word][0];
    var high = FUNCTIONS[word][1];
    if (args.length < low || (high !== null && args.length > high)) {
      var expected = high === null ? low + ' or more' : low === high ? String(low) : low + ' to ' + high;
      throw this.error(word + '() takes ' + expected + ' argument(s), got ' + args.length, token);
    }
    if (word === 'datediff') {
      var unit = args[2];
      if (unit.type === 'literal' && !(typeof unit.value === 'string' && has(DATEDIFF_UNITS, unit.value))) {
        throw ExpressionError("datediff unit must be one of 'y', 'M', 'd', 'h', 'm', 's'", this.text,
          unit.position);
      }
    }
    return node({ type: 'call', name: word, args: Object.freeze(args), position: token.position });
  };

  function children(n) {
    if (n.type === 'unary') {
      return [n.operand];
    }
    if (n.type === 'binary') {
      return [n.left, n.right];
    }
    if (n.type === 'call') {
      return n.args;
    }
    return [];
  }

  function checkDepth(ast, text) {
    var stack = [[ast, 1]];
    while (stack.length) {
      var item = stack.pop();
      if (item[1] > MAX_DEPTH) {
        throw ExpressionError('expression too long or deeply nested', text, item[0].position);
      }
      var kids = children(item[0]);
      for (var i = 0; i < kids.length; i += 1) {
        stack.push([kids[i], item[1] + 1]);
      }
    }
  }

  var cache = new Map();

  function parse(text) {
    if (typeof text !== 'string') {
      throw ExpressionError('an expression must be text', String(text), 0);
    }
    if (cache.has(text)) {
      return cache.get(text);
    }
    var parser = new Parser(text);
    var ast = parser.parse();
    checkDepth(ast, text);
    var references = Object.keys(parser.references).map(function (key) {
      return parser.references[key];
    });
    var expression = Object.freeze({
      text: text,
      ast: ast,
      references: Object.freeze(references),
      fields: Object.freeze(references.map(function (r) { return r.field; })
        .filter(function (f, i, all) { return all.indexOf(f) === i; }))
    });
    if (cache.size >= 2048) {
      cache.clear();
    }
    cache.set(text, expression);
    return expression;
  }

  // ------------------------------------------------------------------------- values

  var NUMERIC = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
  var DATE = new RegExp('^([0-9]{4})-([0-9]{2})-([0-9]{2})' +
    '(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\\.([0-9]+))?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$');

  function isScalarItem(item) {
    return typeof item === 'string' || typeof item === 'number' || typeof item === 'boolean';
  }

  function fromStored(raw) {
    if (raw === null || raw === undefined || typeof raw === 'boolean') {
      return raw === undefined ? null : raw;
    }
    if (typeof raw === 'string') {
      return raw === '' ? null : raw;
    }
    if (typeof raw === 'number') {
      return normaliseNumber(raw);
    }
    if (Array.isArray(raw)) {
      var codes = raw.filter(isScalarItem).map(function (item) { return text(fromStored(item)); })
        .filter(function (code) { return code !== ''; });
      return codes.length ? codes.join(',') : null;
    }
    return null;
  }

  function number(value) {
    if (value === null) {
      return null;
    }
    if (typeof value === 'boolean') {
      return value ? 1 : 0;
    }
    if (typeof value === 'number') {
      return isFinite(value) ? value : null;
    }
    if (NUMERIC.test(value)) {
      var parsed = Number(value);
      return isFinite(parsed) ? parsed : null;
    }
    return null;
  }

  function text(value) {
    if (value === null) {
      return '';
    }
    if (typeof value === 'boolean') {
      return value ? '1' : '0';
    }
    if (typeof value === 'number') {
      return String(value);
    }
    return value;
  }

  function textOrBlank(value) {
    return value === '' ? null : value;
  }

  function truthy(value) {
    if (value === undefined) {
      return false;
    }
    if (value !== null && typeof value === 'object') {
      value = fromStored(value);
    }
    if (value === null) {
      return false;
    }
    if (typeof value === 'boolean') {
      return value;
    }
    if (typeof value === 'number') {
      return isFinite(value) && value !== 0;
    }
    if (typeof value === 'string') {
      var n = number(value);
      return n !== null ? n !== 0 : value !== '';
    }
    return false;
  }

  function equal(left, right) {
    if (left === null || right === null) {
      return left === null && right === null;
    }
    var a = number(left);
    var b = number(right);
    if (a !== null && b !== null) {
      return a === b;
    }
    return text(left) === text(right);
  }

  function compare(op, left, right) {
    if (op === '=') {
      return equal(left, right);
    }
    if (op === '<>') {
      return !equal(left, right);
    }
    if (left === null || right === null) {
      return null;
    }
    var a = number(left);
    var b = number(right);
    var x;
    var y;
    if (a !== null && b !== null) {
      x = a;
      y = b;
    } else {
      x = text(left);
      y = text(right);
    }
    if (op === '<') {
      return x < y;
    }
    if (op === '>') {
      return x > y;
    }
    if (op === '<=') {
      return x <= y;
    }
    return x >= y;
  }

  function arithmetic(op, left, right) {
    var a = number(left);
    var b = number(right);
    if (a === null || b === null) {
      return null;
    }
    var result;
    if (op === '+') {
      result = a + b;
    } else if (op === '-') {
      result = a - b;
    } else if (op === '*') {
      result = a * b;
    } else if (op === '/') {
      if (b === 0) {
        return null;
      }
      result = a / b;
    } else {
      result = Math.pow(a, b);
    }
    return normaliseNumber(result);
  }

  // ------------------------------------------------------------------------- dates

  function daysFromCivil(year, month, day) {
    year -= month <= 2 ? 1 : 0;
    var era = Math.floor((year >= 0 ? year : year - 399) / 400);
    var yearOfEra = year - era * 400;
    var dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
    var dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) +
      dayOfYear;
    return era * 146097 + dayOfEra - 719468;
  }

  function daysInMonth(year, month) {
    if (month === 2) {
      var leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
      return leap ? 29 : 28;
    }
    return [4, 6, 9, 11].indexOf(month) >= 0 ? 30 : 31;
  }

  function dateMatch(value) {
    return typeof value === 'string' ? DATE.exec(value) : null;
  }

  function dateParts(value) {
    var match = dateMatch(value);
    if (match === null) {
      return null;
    }
    var year = parseInt(match[1], 10);
    var month = parseInt(match[2], 10);
    var day = parseInt(match[3], 10);
    if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) {
      return null;
    }
    return [year, month, day];
  }

  function epochSeconds(value, today) {
    if (typeof value === 'string' && value.toLowerCase() === 'today') {
      return daysFromCivil(today[0], today[1], today[2]) * 86400;
    }
    var parts = dateParts(value);
    if (parts === null) {
      return null;
    }
    var match = dateMatch(value);
    var hour = parseInt(match[4] || '0', 10);
    var minute = parseInt(match[5] || '0', 10);
    var second = parseInt(match[6] || '0', 10);
    if (hour > 23 || minute > 59 || second > 59) {
      return null;
    }
    var seconds = daysFromCivil(parts[0], parts[1], parts[2]) * 86400 + hour * 3600 + minute * 60 +
      second;
    if (match[7]) {
      seconds += Number('0.' + match[7]);
    }
    var offset = match[8];
    if (offset && offset !== 'Z') {
      var digits = offset.slice(1).replace(':', '');
      var offHours = parseInt(digits.slice(0, 2), 10);
      var offMinutes = parseInt(digits.slice(2), 10);
      if (offHours > 23 || offMinutes > 59) {
        return null;
      }
      var shift = offHours * 3600 + offMinutes * 60;
      seconds -= offset[0] === '+' ? shift : -shift;
    }
    return seconds;
  }

  function pad(value, width) {
    var s = String(value);
    while (s.length < width) {
      s = '0' + s;
    }
    return s;
  }

  function todayParts(today) {
    if (typeof today === 'string') {
      var parts = dateParts(today);
      if (parts !== null && today.length === 10) {
        return parts;
      }
      throw ExpressionError('today must be a date YYYY-MM-DD', today, 0);
    }
    var moment = today instanceof Date ? today : new Date();
    return [moment.getUTCFullYear(), moment.getUTCMonth() + 1, moment.getUTCDate()];
  }

  // ------------------------------------------------------------------------- evaluator

  function rawValue(ref, ctx) {
    var source = ref.visit === null ? ctx.values : (has(ctx.visits, ref.visit) ? ctx.visits[ref.visit] : null);
    if (!isPlainObject(source)) {
      return null;
    }
    var raw = has(source, ref.field) ? source[ref.field] : null;
    if (ref.instance !== null) {
      if (!isPlainObject(raw) || has(raw, 'missing')) {
        return null;
      }
      var key = String(ref.instance);
      raw = has(raw, key) ? raw[key] : null;
    }
    return raw === undefined ? null : raw;
  }

  function isMissingCode(raw) {
    return isPlainObject(raw) && has(raw, 'missing');
  }

  function referenceValue(ref, ctx) {
    var raw = rawValue(ref, ctx);
    if (ref.option === null) {
      return fromStored(raw);
    }
    if (raw === null || raw === '' || isMissingCode(raw)) {
      return null;
    }
    if (Array.isArray(raw)) {
      var codes = raw.filter(isScalarItem).map(function (item) { return text(fromStored(item)); });
      return codes.indexOf(ref.option) >= 0 ? '1' : '0';
    }
    var stored = fromStored(raw);
    if (stored === null) {
      return null;
    }
    return text(stored) === ref.option ? '1' : '0';
  }

  function evalNode(n, ctx) {
    if (n.type === 'literal') {
      return n.value;
    }
    if (n.type === 'ref') {
      return referenceValue(n.reference, ctx);
    }
    if (n.type === 'unary') {
      var operand = evalNode(n.operand, ctx);
      if (n.op === 'not') {
        return operand === null ? null : !truthy(operand);
      }
      var value = number(operand);
      if (value === null) {
        return null;
      }
      return normaliseNumber(n.op === '-' ? -value : value);
    }
    if (n.type === 'binary') {
      return evalBinary(n, ctx);
    }
    return call(n, ctx);
  }

  function evalBinary(n, ctx) {
    var left;
    var right;
    if (n.op === 'and') {
      left = evalNode(n.left, ctx);
      if (left !== null && !truthy(left)) {
        return false;
      }
      right = evalNode(n.right, ctx);
      if (right !== null && !truthy(right)) {
        return false;
      }
      return left === null || right === null ? null : true;
    }
    if (n.op === 'or') {
      left = evalNode(n.left, ctx);
      if (truthy(left)) {
        return true;
      }
      right = evalNode(n.right, ctx);
      if (truthy(right)) {
        return true;
      }
      return left === null || right === null ? null : false;
    }
    left = evalNode(n.left, ctx);
    right = evalNode(n.right, ctx);
    if (['=', '<>', '<', '>', '<=', '>='].indexOf(n.op) >= 0) {
      return compare(n.op, left, right);
    }
    return arithmetic(n.op, left, right);
  }

  function numbers(values) {
    return values.map(number).filter(function (n) { return n !== null; });
  }

  function roundTo(x, decimals, mode) {
    var places = Math.trunc(decimals);
    if (places > 15) {
      return normaliseNumber(x);
    }
    if (places < -15) {
      return 0;
    }
    var factor = Math.pow(10, Math.abs(places));
    var scaled = places >= 0 ? Math.abs(x) * factor : Math.abs(x) / factor;
    if (!isFinite(scaled)) {
      return normaliseNumber(x);
    }
    var rounded;
    if (mode === 'round') {
      rounded = Math.floor(scaled + 0.5);
    } else if (mode === 'up') {
      rounded = Math.ceil(scaled);
    } else {
      rounded = Math.floor(scaled);
    }
    var result = places >= 0 ? rounded / factor : rounded * factor;
    return normaliseNumber(x < 0 ? -result : result);
  }

  function aggregate(name, values) {
    if (!values.length) {
      return null;
    }
    var total = 0;
    var i;
    for (i = 0; i < values.length; i += 1) {
      total += values[i];
    }
    if (name === 'sum') {
      return normaliseNumber(total);
    }
    if (name === 'min') {
      return normaliseNumber(Math.min.apply(null, values));
    }
    if (name === 'max') {
      return normaliseNumber(Math.max.apply(null, values));
    }
    var mean = total / values.length;
    if (name === 'mean') {
      return normaliseNumber(mean);
    }
    if (name === 'median') {
      var ordered = values.slice().sort(function (a, b) { return a - b; });
      var middle = Math.floor(ordered.length / 2);
      if (ordered.length % 2) {
        return normaliseNumber(ordered[middle]);
      }
      return normaliseNumber((ordered[middle - 1] + ordered[middle]) / 2);
    }
    if (values.length < 2) {
      return null;
    }
    var squares = 0;
    for (i = 0; i < values.length; i += 1) {
      squares += (values[i] - mean) * (values[i] - mean);
    }
    return normaliseNumber(Math.sqrt(squares / (values.length - 1)));
  }

  function datediff(args, ctx) {
    var start = epochSeconds(args[0], ctx.today);
    var end = epochSeconds(args[1], ctx.today);
    var unit = args[2];
    if (start === null || end === null || typeof unit !== 'string' || !has(DATEDIFF_UNITS, unit)) {
      return null;
    }
    var result = (end - start) / DATEDIFF_UNITS[unit];
    if (args.length === 5 && args[4] !== null && !truthy(args[4])) {
      result = Math.abs(result);
    }
    return normaliseNumber(result);
  }

  function trimText(value) {
    var start = 0;
    var end = value.length;
    while (start < end && WHITESPACE.indexOf(value[start]) >= 0) {
      start += 1;
    }
    while (end > start && WHITESPACE.indexOf(value[end - 1]) >= 0) {
      end -= 1;
    }
    return value.slice(start, end);
  }

  function textFunction(name, args) {
    var value = text(args[0]);
    if (name === 'contains' || name === 'starts_with' || name === 'ends_with') {
      var haystack = value.toLowerCase();
      var needle = text(args[1]).toLowerCase();
      if (name === 'contains') {
        return haystack.indexOf(needle) >= 0;
      }
      return name === 'starts_with' ? haystack.startsWith(needle) : haystack.endsWith(needle);
    }
    if (name === 'length') {
      return Array.from(value).length;
    }
    if (name === 'lower') {
      return textOrBlank(value.toLowerCase());
    }
    if (name === 'upper') {
      return textOrBlank(value.toUpperCase());
    }
    if (name === 'trim') {
      return textOrBlank(trimText(value));
    }
    var countNumber = name === 'left' || name === 'right' ? number(args[1]) : number(args[2]);
    if (countNumber === null) {
      return null;
    }
    var count = Math.max(Math.trunc(countNumber), 0);
    var chars = Array.from(value);
    if (name === 'left') {
      return textOrBlank(chars.slice(0, count).join(''));
    }
    if (name === 'right') {
      return textOrBlank(count ? chars.slice(Math.max(chars.length - count, 0)).join('') : '');
    }
    var startNumber = number(args[1]);
    if (startNumber === null) {
      return null;
    }
    var start = Math.max(Math.trunc(startNumber), 1) - 1;
    return textOrBlank(chars.slice(start, start + count).join(''));
  }

  function mathFunction(name, args) {
    var x = number(args[0]);
    if (x === null) {
      return null;
    }
    if (name === 'sqrt') {
      return x < 0 ? null : normaliseNumber(Math.sqrt(x));
    }
    if (name === 'abs') {
      return normaliseNumber(Math.abs(x));
    }
    if (name === 'exp') {
      return normaliseNumber(Math.exp(x));
    }
    if (name === 'log') {
      if (x <= 0) {
        return null;
      }
      if (args.length === 1) {
        return normaliseNumber(Math.log(x));
      }
      var base = number(args[1]);
      if (base === null || base <= 0 || base === 1) {
        return null;
      }
      return normaliseNumber(Math.log(x) / Math.log(base));
    }
    if (name === 'mod') {
      var y = number(args[1]);
      if (y === null || y === 0) {
        return null;
      }
      return normaliseNumber(x % y);
    }
    var decimals = args.length > 1 ? number(args[1]) : 0;
    if (decimals === null) {
      return null;
    }
    return roundTo(x, decimals, name === 'round' ? 'round' : name === 'roundup' ? 'up' : 'down');
  }

  var MATH = ['sqrt', 'abs', 'exp', 'log', 'mod', 'round', 'roundup', 'rounddown'];
  var TEXT = ['contains', 'starts_with', 'ends_with', 'length', 'lower', 'upper', 'trim', 'left',
    'right', 'mid'];

  function call(n, ctx) {
    var name = n.name;
    if (name === 'if') {
      var condition = evalNode(n.args[0], ctx);
      return evalNode(truthy(condition) ? n.args[1] : n.args[2], ctx);
    }
    if (name === 'hasmissingcode' || name === 'isblankormissingcode') {
      var target = n.args[0];
      var missing = target.type === 'ref' && isMissingCode(rawValue(target.reference, ctx));
      if (name === 'hasmissingcode') {
        return missing;
      }
      return missing || evalNode(target, ctx) === null;
    }
    if (name === 'today') {
      return ctx.todayText;
    }
    var args = n.args.map(function (arg) { return evalNode(arg, ctx); });
    var parts;
    switch (name) {
      case 'isblank':
        return args[0] === null;
      case 'isnumber':
        return number(args[0]) !== null;
      case 'isinteger':
        return number(args[0]) !== null && Number.isInteger(number(args[0]));
      case 'concat':
        return textOrBlank(args.map(text).join(''));
      case 'coalesce':
        for (var i = 0; i < args.length; i += 1) {
          if (args[i] !== null) {
            return args[i];
          }
        }
        return null;
      case 'year':
      case 'month':
      case 'day':
        parts = dateParts(args[0]);
        return parts === null ? null : parts[['year', 'month', 'day'].indexOf(name)];
      case 'datediff':
        return datediff(args, ctx);
      default:
        break;
    }
    if (MATH.indexOf(name) >= 0) {
      return mathFunction(name, args);
    }
    if (TEXT.indexOf(name) >= 0) {
      return textFunction(name, args);
    }
    return aggregate(name, numbers(args));
  }

  function evaluate(expr, values, options) {
    var expression = typeof expr === 'string' ? parse(expr) : expr;
    if (!expression || !expression.ast) {
      throw ExpressionError('not an expression', String(expr), 0);
    }
    var opts = options || {};
    var today = todayParts(opts.today);
    var ctx = {
      values: isPlainObject(values) ? values : {},
      visits: isPlainObject(opts.visits) ? opts.visits : {},
      today: today,
      todayText: pad(today[0], 4) + '-' + pad(today[1], 2) + '-' + pad(today[2], 2)
    };
    return evalNode(expression.ast, ctx);
  }

  return Object.freeze({
    parse: parse,
    evaluate: evaluate,
    truthy: truthy,
    FUNCTIONS: FUNCTIONS
  });
});
