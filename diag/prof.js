const { Device } = require('../dist/native/device');
const { measureCostModel } = require('../dist/moe/costModelProfiler');
(async () => {
  const device = Device.open('cuda', 0);
  for (const rpe of [[1024], [1, 1024], [64, 1024], [256, 1024]]) {
    const m = await measureCostModel({ device, dtype: 'bf16', hidden: 5120, expertIntermediate: 1536, sharedIntermediate: 0, numExperts: 80, topK: 6, rowsPerExpert: rpe });
    const g = m.gemm[0];
    console.log(JSON.stringify(rpe), 'dense', g.dense.overheadMs.toFixed(4), g.dense.points.map((p) => `${p.rows}:${(p.ms * 1000).toFixed(1)}`).join(' '), 'grouped', g.grouped.points.map((p) => `${p.rows}:${(p.ms * 1000).toFixed(1)}`).join(' '));
  }
})();
