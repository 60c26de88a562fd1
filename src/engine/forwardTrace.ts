// Puts one rank's forward into a trace: the MoE ops as measured (device events) on the compute and
// communication streams, and beside them each layer's predicted timeline, aligned at the layer's
// first measured op (its router).
import type { ForwardResult } from './forward';
import type { TraceCollector } from '../trace/traceCollector';

export function addForwardToTrace(trace: TraceCollector, rank: number, result: ForwardResult, offsetMs = 0): void {
  const layerStart = new Map<number, number>();
  for (const op of result.measured ?? []) {
    trace.op(rank, op.stream, op.name, offsetMs + op.startMs, offsetMs + op.endMs, { ...op.args, layer: op.layer });
    if (!layerStart.has(op.layer)) layerStart.set(op.layer, op.startMs);
  }
  const moeLayers = [...layerStart.keys()].sort((a, b) => a - b);
  result.plans.forEach((plan, i) => {
    const start = layerStart.get(moeLayers[i]);
    if (start === undefined || !plan.predicted) return;
    trace.predictedTimeline(rank, plan.timeline, offsetMs + start, { layer: moeLayers[i], degree: plan.degree, axis: plan.axis });
  });
}
