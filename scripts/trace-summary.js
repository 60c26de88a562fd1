#!/usr/bin/env node
// Where a traced run's device time went: sums the measured ops of a trace that `eps-moe launch --trace`
// (or `forward --trace`) wrote, per rank, stream and op name (a chunk's number dropped: "ffn 0" and
// "ffn 1" are "ffn"), and prints them largest first with their share of the rank's steps (the time from each step's
// first op to its last, summed), the host's mean time to enqueue them (args.hostUs) and how far ahead of the device
// the host was when it opened them (args.aheadUs: near 0, the device ran dry there and waited for the host), where
// spans carry them. Spans nest (the `attention` op inside `attention_block`),
// so shares of nested names overlap. Also printed: how much of the steps the compute stream's traced ops
// cover (the rest: untraced ops, host syncs and launch gaps), and where within the steps the compute stream
// had no traced op, summed by the ops on either side of each gap (largest first), and the idle time between steps.
// A step (one forward) begins where the compute stream goes back to layer 0, or after 50 ms with no op.
//
// usage: node scripts/trace-summary.js TRACE.json [--rank R] [--top N]
'use strict';
const fs = require('node:fs');

function main(argv) {
  const file = argv[0];
  if (!file) {
    console.error('usage: node scripts/trace-summary.js TRACE.json [--rank R] [--top N]');
    process.exit(2);
  }
  const flag = (name, dflt) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const rank = flag('--rank', 0);
  const top = flag('--top', 30);
  const { traceEvents } = JSON.parse(fs.readFileSync(file, 'utf8'));
  const ops = traceEvents.filter((e) => e.ph === 'X' && e.cat === 'op' && e.pid === rank);
  if (ops.length === 0) {
    console.error(`${file}: no measured ops for rank ${rank}`);
    process.exit(1);
  }
  const tracks = new Map(
    traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.pid === rank).map((e) => [e.tid, e.args.name]),
  );
  const sums = new Map();
  for (const e of ops) {
    const key = `${tracks.get(e.tid) ?? e.tid}\t${baseName(e.name)}`;
    const s = sums.get(key) ?? { count: 0, us: 0, hostUs: 0, hostCount: 0, aheadUs: 0, aheadCount: 0 };
    s.count += 1;
    s.us += e.dur;
    if (typeof e.args?.hostUs === 'number') {
      s.hostUs += e.args.hostUs;
      s.hostCount += 1;
    }
    if (typeof e.args?.aheadUs === 'number') {
      s.aheadUs += e.args.aheadUs;
      s.aheadCount += 1;
    }
    sums.set(key, s);
  }
  const computeTid = [...tracks.entries()].find(([, name]) => name === 'compute')?.[0];
  const compute = ops.filter((e) => e.tid === computeTid);
  const starts = stepStarts(compute);
  const stepUs = stepsTime(ops, starts);
  console.log(`rank ${rank}: ${ops.length} ops, ${(stepUs / 1000).toFixed(1)} ms of steps (first op to last op of each step)`);
  const coveredUs = unionTime(compute);
  console.log(
    `compute stream: traced ops cover ${((100 * coveredUs) / stepUs).toFixed(1)}% of the steps; the rest is untraced ops ` +
      `(norms, residual adds, embedding, logits), host syncs and launch gaps`,
  );
  console.log(['stream', 'op', 'count', 'total ms', 'mean us', 'share', 'host us', 'ahead us'].join('\t'));
  [...sums.entries()]
    .sort((a, b) => b[1].us - a[1].us)
    .slice(0, top)
    .forEach(([key, s]) =>
      console.log(
        [
          key,
          s.count,
          (s.us / 1000).toFixed(2),
          (s.us / s.count).toFixed(1),
          `${((100 * s.us) / stepUs).toFixed(1)}%`,
          // the host's mean time from opening the span to ending it, where the trace has it
          s.hostCount ? (s.hostUs / s.hostCount).toFixed(1) : '-',
          // how far ahead of the device the host opened it (near 0: the device was waiting for the host there)
          s.aheadCount ? (s.aheadUs / s.aheadCount).toFixed(1) : '-',
        ].join('\t'),
      ),
    );
  const between = idleBetweenSteps(compute, starts);
  if (between.length > 0) {
    const mean = between.reduce((a, b) => a + b, 0) / between.length;
    console.log(
      `between steps: ${between.length} gaps, mean ${(mean / 1000).toFixed(2)} ms, max ${(Math.max(...between) / 1000).toFixed(2)} ms ` +
        `(the compute stream idle from a step's last traced op to the next one's first: logits, the answer, the next request)`,
    );
  }
  const gaps = [...computeGaps(compute, starts).entries()].sort((a, b) => b[1].us - a[1].us);
  if (gaps.length === 0) return;
  console.log('compute stream gaps within steps (no traced op), by the traced ops on either side:');
  console.log(['gaps', 'between', 'count', 'total ms', 'mean us', 'share'].join('\t'));
  gaps
    .slice(0, Math.min(top, 12))
    .forEach(([key, s]) =>
      console.log(['gap', key, s.count, (s.us / 1000).toFixed(2), (s.us / s.count).toFixed(1), `${((100 * s.us) / stepUs).toFixed(1)}%`].join('\t')),
    );
}

const baseName = (name) => name.replace(/ \d+$/, '');
// 50 ms with no op: the next step (steps of one request follow within microseconds)
const STEP_GAP_US = 50_000;

/**
 * The times at which steps begin, from the compute stream's ops: its first op, every op of layer 0 after one of a
 * later layer (a new forward), and every op after STEP_GAP_US with none (traces without layers).
 */
function stepStarts(compute) {
  const sorted = [...compute].sort((a, b) => a.ts - b.ts || b.dur - a.dur);
  const starts = [];
  let end = -Infinity;
  let lastLayer = -1;
  for (const e of sorted) {
    const layer = typeof e.args?.layer === 'number' ? e.args.layer : undefined;
    if (starts.length === 0 || e.ts - end > STEP_GAP_US || (layer === 0 && lastLayer > 0)) starts.push(e.ts);
    if (layer !== undefined) lastLayer = layer;
    end = Math.max(end, e.ts + e.dur);
  }
  return starts;
}

/** Index of the step an op at `ts` belongs to (the last start at or before it; ops before the first: step 0). */
function stepOf(starts, ts) {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= ts) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Per step boundary after the first: the compute stream's idle time from the previous step's last op to it. */
function idleBetweenSteps(compute, starts) {
  const ends = new Array(starts.length).fill(-Infinity);
  for (const e of compute) {
    const i = stepOf(starts, e.ts);
    ends[i] = Math.max(ends[i], e.ts + e.dur);
  }
  return starts.slice(1).map((t, i) => t - ends[i]).filter((us) => us > 0);
}

/**
 * The idle intervals between the compute stream's traced ops within a step, keyed "before -> after": the op
 * that ended last before the gap (the outer one where spans nest) and the op that starts after it.
 */
function computeGaps(ops, starts) {
  const sorted = [...ops].sort((a, b) => a.ts - b.ts || b.dur - a.dur);
  const sums = new Map();
  let end = -Infinity;
  let last;
  for (const e of sorted) {
    const idle = e.ts - end;
    if (last && idle > 0 && stepOf(starts, e.ts) === stepOf(starts, last.ts)) {
      const key = `${baseName(last.name)} -> ${baseName(e.name)}`;
      const s = sums.get(key) ?? { count: 0, us: 0 };
      s.count += 1;
      s.us += idle;
      sums.set(key, s);
    }
    if (e.ts + e.dur > end) {
      end = e.ts + e.dur;
      last = e;
    }
  }
  return sums;
}

/** The time covered by at least one of the ops (nested and overlapping spans counted once). */
function unionTime(ops) {
  const sorted = [...ops].sort((a, b) => a.ts - b.ts);
  let total = 0;
  let start = -Infinity;
  let end = -Infinity;
  for (const e of sorted) {
    if (e.ts > end) {
      if (end > start) total += end - start;
      start = e.ts;
      end = e.ts + e.dur;
    } else end = Math.max(end, e.ts + e.dur);
  }
  return end > start ? total + (end - start) : total;
}

/** Each step's span, first op to last (any stream), summed. */
function stepsTime(ops, starts) {
  const first = new Array(starts.length).fill(Infinity);
  const last = new Array(starts.length).fill(-Infinity);
  for (const e of ops) {
    const i = stepOf(starts, e.ts);
    first[i] = Math.min(first[i], e.ts);
    last[i] = Math.max(last[i], e.ts + e.dur);
  }
  return first.reduce((total, f, i) => (f < Infinity ? total + (last[i] - f) : total), 0);
}

main(process.argv.slice(2));
