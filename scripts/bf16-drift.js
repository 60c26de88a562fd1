#!/usr/bin/env node
// How far bf16 storage alone takes the CPU reference from transformers' fp32 logits, per golden fixture
// (relative L2 over every position, argmax agreement), beside f32. Needs dist (npm run build).
// usage: node scripts/bf16-drift.js [fixture ...]   (default: every fixture under test/fixtures)
const { loadRankEngine } = require('../dist/engine/rankEngine');
const { LocalCommunicator } = require('../dist/comm/communicator');
const path = require('path');
(async () => {
  const fs = require('fs');
  const all = fs.readdirSync(path.join(__dirname, '..', 'test', 'fixtures')).filter((f) => fs.existsSync(path.join(__dirname, '..', 'test', 'fixtures', f, 'golden.json')));
  for (const fx of process.argv.length > 2 ? process.argv.slice(2) : all) {
    const dir = path.join(path.join(__dirname, '..', 'test', 'fixtures'), fx);
    const golden = require(path.join(dir, 'golden.json'));
    for (const dt of ['f32', 'bf16']) {
      const e = await loadRankEngine({ modelDir: dir, backend: 'cpu', deviceIndex: 0, comm: new LocalCommunicator(), schedule: { kind: 'baseline' }, weightDtype: dt, actDtype: dt });
      const { logits } = await e.runner.forward(golden.sequences, { allLogits: true });
      let num = 0, den = 0, agree = 0, n = 0;
      golden.logits.forEach((seq, s) => seq.forEach((row, t) => {
        const got = logits[s].subarray(t * row.length, (t + 1) * row.length);
        let am = 0, ag = 0;
        row.forEach((w, v) => { num += (got[v] - w) ** 2; den += w * w; if (w > row[am]) am = v; if (got[v] > got[ag]) ag = v; });
        n++; if (am === ag) agree++;
      }));
      console.log(`${fx.padEnd(20)} ${dt.padEnd(5)} relL2 ${Math.sqrt(num / den).toExponential(2)} argmax ${agree}/${n}`);
      await e.dispose();
    }
  }
})();
