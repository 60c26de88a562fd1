// scripts/trace-summary.js: per-op sums of a trace's measured ops, and the compute stream's coverage.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TraceCollector } from '../src/trace/traceCollector';

test('sums measured ops per name (chunk numbers dropped), skips predicted ones, reports coverage', async () => {
  const trace = new TraceCollector();
  // One step of 10 ms on rank 0: attention_block 0-4 ms holding attention 1-3 ms, ffn 0 and ffn 1 5-6 and 6-8 ms,
  // a comm op, a predicted op that must not count, and an op of rank 1 that must not count.
  trace.op(0, 'compute', 'attention_block', 0, 4);
  trace.op(0, 'compute', 'attention', 1, 3, { hostUs: 40, aheadUs: 12 });
  trace.op(0, 'compute', 'ffn 0', 5, 6);
  trace.op(0, 'compute', 'ffn 1', 6, 8);
  trace.op(0, 'comm', 'dispatch 0', 4, 10);
  trace.predicted(0, 'compute', 'ffn 0', 0, 9);
  trace.op(1, 'compute', 'ffn 0', 0, 50);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'eps-trace-summary-')), 't.json');
  await trace.write(file);
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'trace-summary.js'), file], { encoding: 'utf8' });
  expect(out).toMatch(/^rank 0: 5 ops, 10\.0 ms of steps/m);
  // compute ops cover 0-4 and 5-8 ms: 7 of 10 ms
  expect(out).toMatch(/compute stream: traced ops cover 70\.0% of the steps/);
  const rows = out.split('\n').filter((l) => l.includes('\t') && !l.startsWith('stream') && !l.startsWith('gap'));
  expect(rows.map((l) => l.split('\t').slice(0, 4))).toEqual([
    ['comm', 'dispatch', '1', '6.00'],
    ['compute', 'attention_block', '1', '4.00'],
    ['compute', 'ffn', '2', '3.00'],
    ['compute', 'attention', '1', '2.00'],
  ]);
  // The host's enqueue time, where the span has it
  expect(rows.map((l) => l.split('\t')[6])).toEqual(['-', '-', '-', '40.0']);
  expect(rows.map((l) => l.split('\t')[7])).toEqual(['-', '-', '-', '12.0']);
  // The compute stream idles 4-5 ms, between attention_block (the outer span that ended last) and ffn 0.
  const gaps = out.split('\n').filter((l) => l.startsWith('gap\t'));
  expect(gaps.map((l) => l.split('\t').slice(1, 4))).toEqual([['attention_block -> ffn', '1', '1.00']]);
});

test('gaps are summed per pair of neighbours, largest first; a gap of a new step is not one', async () => {
  const trace = new TraceCollector();
  for (const t0 of [0, 100]) {
    // Two steps 100 ms apart; in each, router 0-1, a 0.5 ms gap, ffn 1.5-3, a 2 ms gap, norm 5-6.
    trace.op(0, 'compute', 'router', t0, t0 + 1);
    trace.op(0, 'compute', 'ffn 0', t0 + 1.5, t0 + 3);
    trace.op(0, 'compute', 'norm', t0 + 5, t0 + 6);
  }
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'eps-trace-summary-')), 't.json');
  await trace.write(file);
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'trace-summary.js'), file], { encoding: 'utf8' });
  const gaps = out.split('\n').filter((l) => l.startsWith('gap\t'));
  expect(gaps.map((l) => l.split('\t').slice(1, 5))).toEqual([
    ['ffn -> norm', '2', '4.00', '2000.0'],
    ['router -> ffn', '2', '1.00', '500.0'],
  ]);
});

test('a forward begins where the compute stream goes back to layer 0: the idle time before it is between steps', async () => {
  const trace = new TraceCollector();
  for (const t0 of [0, 20]) {
    // Two forwards of two layers, 10 ms apart (under the 50 ms that splits traces without layers); inside each,
    // a 1 ms gap between layer 0's ffn and layer 1's attention_block, 1.5 ms between that and its ffn.
    trace.op(0, 'compute', 'attention_block', t0, t0 + 2, { layer: 0 });
    trace.op(0, 'compute', 'ffn 0', t0 + 2, t0 + 4, { layer: 0 });
    trace.op(0, 'compute', 'attention_block', t0 + 5, t0 + 7, { layer: 1 });
    trace.op(0, 'comm', 'combine 0', t0 + 7, t0 + 9, { layer: 1 });
    trace.op(0, 'compute', 'ffn 0', t0 + 8.5, t0 + 10, { layer: 1 });
  }
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'eps-trace-summary-')), 't.json');
  await trace.write(file);
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'trace-summary.js'), file], { encoding: 'utf8' });
  // Two steps of 10 ms each (not one of 30 ms).
  expect(out).toMatch(/^rank 0: 10 ops, 20\.0 ms of steps/m);
  expect(out).toMatch(/^between steps: 1 gaps, mean 10\.00 ms, max 10\.00 ms/m);
  const gaps = out.split('\n').filter((l) => l.startsWith('gap\t'));
  expect(gaps.map((l) => l.split('\t').slice(1, 4))).toEqual([
    ['attention_block -> ffn', '2', '3.00'],
    ['ffn -> attention_block', '2', '2.00'],
  ]);
});
