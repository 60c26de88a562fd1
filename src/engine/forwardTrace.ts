// Puts one rank's forward into a trace: the MoE ops, the attention block (and its core, the attention
// op) and dense MLPs as measured (device events) on the compute and communication streams, and beside
// them each MoE layer's predicted timeline, aligned at the layer's router.
import type { ForwardResult } from './forward';
import type { TraceCollector } from '../trace/traceCollector';

export function addForwardToTrace(trace: TraceCollector, rank: number, result: ForwardResult, offsetMs = 0): void {
  const layerStart = new Map<number, number>();
  for (const op of result.measured ?? []) {
    trace.op(rank, op.stream, op.name, offsetMs + op.startMs, offsetMs + op.endMs, { ...op.args, layer: op.layer });
    // A MoE layer's first op is its router (the attention block before it has spans of its own).
    if (op.name === 'router' && !layerStart.has(op.layer)) layerStart.set(op.layer, op.startMs);
  }
  const moeLayers = [...layerStart.keys()].sort((a, b) => a - b);
  result.plans.forEach((plan, i) => {
    const start = layerStart.get(moeLayers[i]);
    if (start === undefined || !plan.predicted) return;
    trace.predictedTimeline(rank, plan.timeline, offsetMs + start, { layer: moeLayers[i], degree: plan.degree, axis: plan.axis });
  });
}
