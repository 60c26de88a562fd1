// Golden checkpoints made by transformers (test/fixtures/<name>/, written on a host with PyTorch):
// every fixture's config must parse and every weight the engine needs must be found with the shape
// the config implies, in whichever layout (per expert / fused) transformers wrote.
import { existsSync, readdirSync } from 'fs';
import * as path from 'path';
import { Checkpoint } from '../src/model/checkpoint';
import { loadModelSpec } from '../src/model/config';

const FIXTURES = path.join(__dirname, 'fixtures');

function fixtureDirs(): string[] {
  if (!existsSync(FIXTURES)) return [];
  return readdirSync(FIXTURES, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(FIXTURES, d.name, 'config.json')))
    .map((d) => d.name)
    .sort();
}

const fixtures = fixtureDirs();

if (fixtures.length === 0) {
  test.skip('no golden checkpoints under test/fixtures yet', () => undefined);
} else {
  describe.each(fixtures)('fixture %s', (name) => {
    const dir = path.join(FIXTURES, name);

    test('config parses and every engine weight is present with the right shape', async () => {
      const spec = await loadModelSpec(dir);
      const ck = await Checkpoint.open(dir);
      try {
        expect(ck.spec.family).toBe(spec.family);
        await ck.verify();
        // Read one of each kind, to be sure the bytes are there too.
        const s = ck.spec;
        expect((await ck.embed()).shape).toEqual([s.vocabSize, s.hiddenSize]);
        expect((await ck.lmHead()).shape).toEqual([s.vocabSize, s.hiddenSize]);
        const moe = s.layers.findIndex((l) => l.mlp === 'moe');
        if (moe >= 0) {
          const last = s.moe.numExperts - 1;
          const gu = await ck.expertGateUp(moe, last);
          expect(gu.shape).toEqual([2 * s.moe.expertIntermediate, s.hiddenSize]);
          expect(gu.bytes.length).toBe(gu.shape[0] * gu.shape[1] * (gu.dtype === 'f32' ? 4 : 2));
          // DBRX's w2 holds each expert's down projection transposed; the loader transposes it on the device.
          const down = ck.expertDownTransposed ? [s.moe.expertIntermediate, s.hiddenSize] : [s.hiddenSize, s.moe.expertIntermediate];
          expect((await ck.expertDown(moe, last)).shape).toEqual(down);
        }
      } finally {
        await ck.close();
      }
    });
  });
}
