// `eps-moe launch --trace FILE`: every rank traces its steps' ops (attention block and core, MoE ops); the launcher merges them into
// one Chrome trace when the cluster stops.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FIXTURES, startCluster } from './clusterHarness';

test('a 2-rank cluster writes one trace with both ranks, measured and predicted', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'eps-trace-')), 'cluster.json');
  const cluster = await startCluster({ model: path.join(FIXTURES, 'mixtral'), ranks: 2, moeSchedule: 'auto', trace: file });
  try {
    await cluster.client.prefill({ sequences: [{ ids: [1, 2, 3, 4, 5] }, { ids: [6, 7] }] }, { timeoutMs: 30_000 });
    expect(await cluster.stop('SIGINT')).toEqual({ code: 0, signal: null });
  } finally {
    await cluster.destroy();
  }
  const events = (JSON.parse(fs.readFileSync(file, 'utf8')) as { traceEvents: { ph: string; pid: number; name: string; cat?: string; ts: number; dur: number }[] })
    .traceEvents;
  const ops = events.filter((e) => e.ph === 'X');
  expect(new Set(ops.map((e) => e.pid))).toEqual(new Set([0, 1]));
  for (const name of ['attention_block', 'input_norm', 'qkv_proj', 'qk_norm_rope', 'attention', 'o_proj', 'post_norm', 'router', 'count_sync', 'dispatch 0', 'ffn 0', 'combine 0', 'residual_add'])
    expect(ops.some((e) => e.name === name && e.cat === 'op')).toBe(true);
  // The attention core runs inside its block, and the block ends before the layer's router starts.
  const blocks = ops.filter((e) => e.name === 'attention_block');
  for (const core of ops.filter((e) => e.name === 'attention'))
    expect(blocks.some((b) => b.pid === core.pid && b.ts <= core.ts && core.ts + core.dur <= b.ts + b.dur)).toBe(true);
  // The counts' read and the plan (the layer's host sync) follow a router of the same rank (a rank given no
  // tokens routes nothing, yet still waits for its peers' counts). Within 1 us: the timestamps are absolute
  // microseconds (~1.8e15) in doubles, good to about 0.25 us.
  const routers = ops.filter((e) => e.name === 'router');
  for (const sync of ops.filter((e) => e.name === 'count_sync' && routers.some((r) => r.pid === e.pid)))
    expect(routers.some((r) => r.pid === sync.pid && r.ts + r.dur <= sync.ts + 1)).toBe(true);
  // The router's GEMM and its top-k kernel are spans of their own inside a router of the same rank.
  const within = (inner: (typeof ops)[number], outer: (typeof ops)[number]) =>
    inner.pid === outer.pid && outer.ts <= inner.ts + 1 && inner.ts + inner.dur <= outer.ts + outer.dur + 1;
  for (const name of ['router_gemm', 'router_topk']) {
    const parts = ops.filter((e) => e.name === name);
    expect(parts.length).toBeGreaterThan(0);
    for (const part of parts) expect(routers.some((r) => within(part, r))).toBe(true);
  }
  expect(ops.some((e) => e.cat === 'predicted')).toBe(true);
  expect(fs.readdirSync(path.dirname(file))).toEqual(['cluster.json']); // the per-rank parts are gone
});
