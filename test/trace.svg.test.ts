// The SVG timeline of a trace: one row per (rank, track), one bar per op, measured bars opaque and
// predicted ones faint.
import { TraceCollector } from '../src/trace/traceCollector';
import { traceToSvg } from '../src/trace/svg';

test('an SVG row per track and a bar per op', () => {
  const trace = new TraceCollector();
  trace.op(0, 'compute', 'ffn 0', 1, 3);
  trace.op(0, 'comm', 'dispatch 0', 0, 1);
  trace.op(1, 'compute', 'ffn 0', 1.5, 3.5);
  trace.predicted(0, 'compute', 'ffn 0', 1, 2.5);
  const svg = traceToSvg(trace.events(), 'a <layer>');
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg).toContain('a &lt;layer&gt;');
  expect(svg.match(/<rect x=/g)).toHaveLength(4);
  for (const row of ['rank 0 compute', 'rank 0 comm', 'rank 1 compute', 'rank 0 predicted compute'])
    expect(svg).toContain(`>${row}</text>`);
  expect(svg.match(/fill-opacity="0.45"/g)).toHaveLength(1); // the one predicted bar
});
