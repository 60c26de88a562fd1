#!/usr/bin/env node
// Prints the experts and attention rows of `eps-moe bench --json` runs of two trees side by side:
// per row the TFLOP/s of each base run, of each run of this tree, and the ratio of their medians.
// usage: compare-bench.js BASE1.json [BASE2.json ...] -- THIS1.json [THIS2.json ...]
//        (or four files: two base runs, then two of this tree)
const fs = require('fs');

const args = process.argv.slice(2);
const cut = args.indexOf('--');
const baseFiles = cut >= 0 ? args.slice(0, cut) : args.slice(0, args.length / 2);
const thisFiles = cut >= 0 ? args.slice(cut + 1) : args.slice(args.length / 2);
const read = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

/** Every row as (key, TFLOP/s) pairs: experts rows give grouped and dense, attention rows one. */
function rows(report) {
  const out = new Map();
  for (const r of report.suites.experts ?? []) {
    out.set(`experts ${r.shape} M=${r.rowsPerExpert} grouped`, r.groupedTflops);
    out.set(`experts ${r.shape} M=${r.rowsPerExpert} dense`, r.denseTflops);
  }
  for (const r of report.suites.attention ?? []) out.set(`attention ${r.name}`, r.tflops);
  return out;
}

const base = baseFiles.map((f) => rows(read(f)));
const mine = thisFiles.map((f) => rows(read(f)));
const fmt = (v) => (v === undefined ? '-' : v.toFixed(1)).padStart(7);
console.log(`${'row'.padEnd(58)} ${'base TFLOP/s'.padStart(15)} | ${'this TFLOP/s'.padStart(15)} | this/base`);
const ratios = [];
for (const key of base[0].keys()) {
  const b = base.map((m) => m.get(key)).filter((v) => v !== undefined);
  const t = mine.map((m) => m.get(key)).filter((v) => v !== undefined);
  const ratio = t.length && b.length ? median(t) / median(b) : NaN;
  if (Number.isFinite(ratio)) ratios.push(ratio);
  console.log(`${key.padEnd(58)} ${b.map(fmt).join('')} | ${t.map(fmt).join('')} | ${ratio.toFixed(3)}`);
}
if (ratios.length) console.log(`median this/base over ${ratios.length} rows: ${median(ratios).toFixed(3)} (min ${Math.min(...ratios).toFixed(3)}, max ${Math.max(...ratios).toFixed(3)})`);
