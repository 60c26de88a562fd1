#!/usr/bin/env node
// Renders a trace written by `eps-moe forward --trace` or `eps-moe bench moe --trace` as an SVG
// timeline (for the docs):  node scripts/trace-to-svg.js TRACE.json OUT.svg "title"
const fs = require('fs');
const { traceToSvg } = require('../dist/trace/svg.js');
const [file, out, title] = process.argv.slice(2);
if (!file || !out) {
  process.stderr.write('usage: node scripts/trace-to-svg.js TRACE.json OUT.svg [title]\n');
  process.exit(2);
}
const { traceEvents } = JSON.parse(fs.readFileSync(file, 'utf8'));
fs.writeFileSync(out, traceToSvg(traceEvents, title ?? file));
