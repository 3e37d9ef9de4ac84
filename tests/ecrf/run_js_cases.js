// Evaluate every case of expression_cases.json with ecrf/static/expressions.js and print the
// outcomes as JSON (one entry per case): {"result": value} or {"error": reason, "position": n}.
'use strict';
const fs = require('fs');
const path = require('path');
const DtxExpr = require(path.join(__dirname, '..', '..', 'ecrf', 'static', 'expressions.js'));

const casesPath = process.argv[2] || path.join(__dirname, 'expression_cases.json');
const cases = JSON.parse(fs.readFileSync(casesPath, 'utf8'));
const outcomes = cases.map((testCase) => {
  try {
    const result = DtxExpr.evaluate(testCase.expression, testCase.values || {}, {
      visits: testCase.visits || {},
      today: testCase.today || '2024-06-01',
    });
    return { result: result === undefined ? '<undefined>' : result };
  } catch (error) {
    if (!error.isExpressionError) {
      return { crash: String(error && error.stack) };
    }
    return { error: error.reason, position: error.position };
  }
});
process.stdout.write(JSON.stringify(outcomes));
