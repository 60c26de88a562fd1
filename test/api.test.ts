// The programmatic API as a user gets it: require('eps-moe') from another folder (the package's `main`,
// dist/index.js), a cluster started with startCluster, a prefill through its typed client, and the
// same sequence through openModel in the same process: the cluster's next token is the argmax of the
// in-process logits.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(ROOT, 'dist', 'index.js'));
if (!built) console.log('api: skipped: dist/index.js is not built (npm run build; npm install builds it)');
const maybe = built ? test : test.skip;

maybe(
  "require('eps-moe') from another folder starts a cluster, prefills, and agrees with openModel",
  () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-api-'));
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'eps-moe'), 'dir');
    const script = `
      const eps = require('eps-moe');
      (async () => {
        const cluster = await eps.startCluster({ preset: 'tiny', backend: 'cpu', port: 0, ranks: 2 });
        const client = cluster.client();
        const res = await client.prefill({ sequences: [{ ids: [1, 2, 3, 4] }], topLogprobs: 2 });
        client.close();
        const code = await cluster.stop();
        const model = await eps.openModel({ model: cluster.modelDir, backend: 'cpu' });
        const [logits] = await model.forward([[1, 2, 3, 4]]);
        await model.dispose();
        let argmax = 0;
        for (let i = 1; i < logits.length; i++) if (logits[i] > logits[argmax]) argmax = i;
        console.log(JSON.stringify({ code, world: cluster.world, next: Number(res.sequences[0].nextToken), argmax, top: res.sequences[0].topLogprobs.length }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = execFileSync(process.execPath, ['-e', script], {
      cwd: dir,
      env: { ...process.env, EPS_CACHE_DIR: path.join(dir, 'cache'), EPS_LOG_LEVEL: 'warn' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r).toEqual({ code: 0, world: 2, next: r.argmax, argmax: r.argmax, top: 2 });
    fs.rmSync(dir, { recursive: true, force: true });
  },
  90_000,
);
