// The Chrome trace-event writer: the JSON shape chrome://tracing and Perfetto read (complete events in
// microseconds, tracks named by metadata events), the predicted track beside the measured ones, and
// the file on disk.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TraceCollector } from '../src/trace/traceCollector';
import { TraceError, type CompleteEvent, type MetadataEvent, type TraceEvent } from '../src/trace/traceEvents';

const complete = (events: TraceEvent[]) => events.filter((e): e is CompleteEvent => e.ph === 'X');
const meta = (events: TraceEvent[]) => events.filter((e): e is MetadataEvent => e.ph === 'M');

test('ops become complete events in microseconds on (rank, stream) tracks', () => {
  const trace = new TraceCollector({ originMs: 1000 });
  trace.op(0, 'compute', 'ffn 0', 1001.5, 1003.25, { rows: 128, kernel: 'grouped' });
  trace.op(0, 'comm', 'dispatch 1', 1001, 1002);
  trace.op(1, 'compute', 'ffn 0', 1002, 1002.5);
  trace.op(0, 'compute', 'ffn 1', 1003.25, 1004);

  const events = trace.events();
  expect(complete(events)).toEqual([
    { name: 'ffn 0', cat: 'op', ph: 'X', ts: 1500, dur: 1750, pid: 0, tid: 1, args: { rows: 128, kernel: 'grouped' } },
    { name: 'dispatch 1', cat: 'op', ph: 'X', ts: 1000, dur: 1000, pid: 0, tid: 2 },
    { name: 'ffn 0', cat: 'op', ph: 'X', ts: 2000, dur: 500, pid: 1, tid: 1 },
    { name: 'ffn 1', cat: 'op', ph: 'X', ts: 3250, dur: 750, pid: 0, tid: 1 },
  ]);
  expect(meta(events)).toEqual([
    { name: 'process_name', ph: 'M', pid: 0, args: { name: 'rank 0' } },
    { name: 'process_sort_index', ph: 'M', pid: 0, args: { sort_index: 0 } },
    { name: 'thread_name', ph: 'M', pid: 0, tid: 1, args: { name: 'compute' } },
    { name: 'thread_sort_index', ph: 'M', pid: 0, tid: 1, args: { sort_index: 1 } },
    { name: 'thread_name', ph: 'M', pid: 0, tid: 2, args: { name: 'comm' } },
    { name: 'thread_sort_index', ph: 'M', pid: 0, tid: 2, args: { sort_index: 2 } },
    { name: 'process_name', ph: 'M', pid: 1, args: { name: 'rank 1' } },
    { name: 'process_sort_index', ph: 'M', pid: 1, args: { sort_index: 1 } },
    { name: 'thread_name', ph: 'M', pid: 1, tid: 1, args: { name: 'compute' } },
    { name: 'thread_sort_index', ph: 'M', pid: 1, tid: 1, args: { sort_index: 1 } },
  ]);
});

test('predictions go on their own tracks, after the measured ones', () => {
  const trace = new TraceCollector();
  trace.op(2, 'compute', 'ffn 0', 10, 12);
  trace.predicted(2, 'compute', 'ffn 0', 10, 11.5, { layer: 3 });
  trace.predictedTimeline(
    2,
    [
      { stream: 'comm', name: 'dispatch 0', startMs: 0, endMs: 0.5 },
      { stream: 'compute', name: 'ffn 0', startMs: 0.5, endMs: 2 },
    ],
    20,
  );
  const events = trace.events();
  const names = Object.fromEntries(
    meta(events)
      .filter((e) => e.name === 'thread_name')
      .map((e) => [e.tid, (e.args as { name: string }).name]),
  );
  expect(names).toEqual({ 1: 'compute', 2: 'predicted compute', 3: 'predicted comm' });
  const sort = Object.fromEntries(
    meta(events)
      .filter((e) => e.name === 'thread_sort_index')
      .map((e) => [e.tid, (e.args as { sort_index: number }).sort_index]),
  );
  expect(sort[1]).toBeLessThan(sort[2]);
  expect(sort[1]).toBeLessThan(sort[3]);
  expect(complete(events).map((e) => [e.cat, e.tid, e.name, e.ts, e.dur])).toEqual([
    ['op', 1, 'ffn 0', 10000, 2000],
    ['predicted', 2, 'ffn 0', 10000, 1500],
    ['predicted', 3, 'dispatch 0', 20000, 500],
    ['predicted', 2, 'ffn 0', 20500, 1500],
  ]);
});

test('bad times and ranks are refused', () => {
  const trace = new TraceCollector();
  expect(() => trace.op(0, 'compute', 'x', 2, 1)).toThrow(TraceError);
  expect(() => trace.op(0, 'compute', 'x', NaN, 1)).toThrow(/start NaN ms/);
  expect(() => trace.op(-1, 'compute', 'x', 0, 1)).toThrow(/rank must be a non-negative integer/);
  expect(trace.size).toBe(0);
});

test('beyond maxEvents, events are counted, not kept', () => {
  const trace = new TraceCollector({ maxEvents: 2 });
  for (let i = 0; i < 5; i++) trace.op(0, 'compute', `op ${i}`, i, i + 1);
  expect(trace.size).toBe(2);
  expect(trace.dropped).toBe(3);
  expect(trace.toJSON().otherData).toEqual({ droppedEvents: 3, maxEvents: 2 });
});

test("absorb merges another rank's events", () => {
  const a = new TraceCollector();
  a.op(0, 'compute', 'ffn 0', 0, 1);
  const b = new TraceCollector();
  b.op(1, 'compute', 'ffn 0', 0, 2);
  a.absorb(b.events());
  expect(complete(a.events()).map((e) => e.pid)).toEqual([0, 1]);
  expect(
    meta(a.events())
      .filter((e) => e.name === 'process_name')
      .map((e) => e.pid),
  ).toEqual([0, 1]);
});

test('write() gives a JSON file in the trace-event object format', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-trace-'));
  try {
    const trace = new TraceCollector();
    for (let i = 0; i < 5000; i++) trace.op(i % 2, i % 3 ? 'compute' : 'comm', `op ${i}`, i, i + 0.5, { i });
    trace.predicted(0, 'compute', 'ffn 0', 0, 1);
    const file = path.join(dir, 'sub', 'trace.json');
    await trace.write(file);
    const parsed = JSON.parse(await fs.readFile(file, 'utf8'));
    expect(parsed.displayTimeUnit).toBe('ms');
    expect(parsed.traceEvents).toEqual(trace.events());
    expect(parsed.traceEvents.filter((e: TraceEvent) => e.ph === 'X').length).toBe(5001);
    for (const e of parsed.traceEvents) {
      if (e.ph !== 'X') continue;
      expect(Object.keys(e).sort()).toEqual(expect.arrayContaining(['cat', 'dur', 'name', 'ph', 'pid', 'tid', 'ts']));
    }
    await expect(new TraceCollector().write(path.join(file, 'not-a-dir', 't.json'))).rejects.toThrow(/cannot write the trace/);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
