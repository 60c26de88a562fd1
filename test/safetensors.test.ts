// The safetensors reader and writer. Files for the reader are built byte by byte here, following
// the format description (8-byte LE header length, JSON header, data), not with the writer.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ModelError } from '../src/model/errors';
import { SafetensorsFile } from '../src/model/safetensorsReader';
import { SafetensorsStore } from '../src/model/safetensorsStore';
import { SafetensorsWriter, ShardedWriter, planShards } from '../src/model/safetensorsWriter';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-st-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A safetensors file from a header object and the data bytes. */
function buildFile(header: unknown, data: Uint8Array, headerText?: string): Buffer {
  const json = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.from(data)]);
}

const f32Bytes = (values: number[]): Uint8Array => new Uint8Array(new Float32Array(values).buffer);

async function expectModelError(p: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ModelError);
  expect((err as ModelError).code).toBe(code);
  for (const f of fragments) expect((err as ModelError).message).toContain(f);
}

describe('SafetensorsFile (hand-built files)', () => {
  test('reads tensors at their offsets; __metadata__ is ignored', async () => {
    // a: F32 [2, 3] = 0..5 at [0, 24); b: BF16 [2] = (1.0, -2.0) at [24, 28).
    const data = new Uint8Array(28);
    data.set(f32Bytes([0, 1, 2, 3, 4, 5]), 0);
    data.set([0x80, 0x3f, 0x00, 0xc0], 24);
    const file = path.join(dir, 'a.safetensors');
    await fs.writeFile(
      file,
      buildFile(
        {
          __metadata__: { format: 'pt' },
          b: { dtype: 'BF16', shape: [2], data_offsets: [24, 28] },
          a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
        },
        data,
      ),
    );
    const st = await SafetensorsFile.open(file);
    try {
      expect(st.names().sort()).toEqual(['a', 'b']);
      const a = await st.read('a');
      expect(a.dtype).toBe('f32');
      expect(a.shape).toEqual([2, 3]);
      expect(Array.from(new Float32Array(a.bytes.buffer, a.bytes.byteOffset, 6))).toEqual([0, 1, 2, 3, 4, 5]);
      const b = await st.read('b');
      expect(b.dtype).toBe('bf16');
      expect(Array.from(b.bytes)).toEqual([0x80, 0x3f, 0x00, 0xc0]);
      // A slice along dim 0 is the second row only.
      const row = await st.readRows('a', 1, 1);
      expect(row.shape).toEqual([1, 3]);
      expect(Array.from(new Float32Array(row.bytes.buffer, row.bytes.byteOffset, 3))).toEqual([3, 4, 5]);
      await expectModelError(st.readRows('a', 1, 2), 'SAFETENSORS_BAD_SLICE', file, '"a"');
      await expectModelError(st.read('c'), 'TENSOR_MISSING', file, '"c"');
    } finally {
      await st.close();
    }
  });

  test('a slice of a 4 GiB tensor reads only that slice', async () => {
    // Sparse file: F32 [1024, 1048576] (4 GiB of data), only row 700 written. Reading the whole
    // tensor or file would take seconds and 4 GiB of memory; the slice takes one 4 MiB read.
    const rows = 1024;
    const cols = 1 << 20;
    const header = { w: { dtype: 'F32', shape: [rows, cols], data_offsets: [0, rows * cols * 4] } };
    const head = buildFile(header, new Uint8Array(0));
    const file = path.join(dir, 'big.safetensors');
    const fh = await fs.open(file, 'w');
    try {
      await fh.write(head, 0, head.length, 0);
      const row = new Float32Array(cols);
      for (let i = 0; i < cols; i++) row[i] = i % 251;
      await fh.write(new Uint8Array(row.buffer), 0, cols * 4, head.length + 700 * cols * 4);
      await fh.truncate(head.length + rows * cols * 4);
    } finally {
      await fh.close();
    }
    const st = await SafetensorsFile.open(file);
    try {
      const t = await st.readRows('w', 700, 1);
      expect(t.shape).toEqual([1, cols]);
      expect(t.bytes.length).toBe(cols * 4);
      const v = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, cols);
      expect([v[0], v[1], v[250], v[251], v[cols - 1]]).toEqual([0, 1, 250, 0, (cols - 1) % 251]);
      const zero = await st.readRows('w', 3, 1);
      expect(new Float32Array(zero.bytes.buffer).every((x) => x === 0)).toBe(true);
    } finally {
      await st.close();
    }
  });

  describe('malformed files: the error names the file and the problem', () => {
    const write = async (bytes: Uint8Array | Buffer): Promise<string> => {
      const file = path.join(dir, 'bad.safetensors');
      await fs.writeFile(file, bytes);
      return file;
    };

    test('shorter than the 8-byte length', async () => {
      const file = await write(Buffer.from([1, 2, 3]));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_TRUNCATED', file, 'truncated');
    });

    test('header length past the end of the file', async () => {
      const full = buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32Bytes([1]));
      const file = await write(full.subarray(0, 20));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_TRUNCATED', file, 'header');
    });

    test('header is not JSON', async () => {
      const file = await write(buildFile(null, new Uint8Array(0), '{"a": {"dtype": "F32",'));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_BAD_HEADER', file, 'JSON');
    });

    test('header is JSON but not an object', async () => {
      const file = await write(buildFile([1, 2], new Uint8Array(0)));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_BAD_HEADER', file);
    });

    test('data_offsets past the end of the file', async () => {
      const file = await write(buildFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32Bytes([1, 2])));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_OUT_OF_BOUNDS', file, '"a"', 'past the end');
    });

    test('unknown dtype', async () => {
      const file = await write(buildFile({ a: { dtype: 'F12', shape: [1], data_offsets: [0, 4] } }, f32Bytes([1])));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_UNKNOWN_DTYPE', file, 'F12');
    });

    test('a known dtype the engine cannot take fails when read', async () => {
      const file = await write(buildFile({ a: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)));
      const st = await SafetensorsFile.open(file);
      try {
        await expectModelError(st.read('a'), 'SAFETENSORS_UNKNOWN_DTYPE', file, 'F64');
      } finally {
        await st.close();
      }
    });

    test('shape does not match the byte length', async () => {
      const file = await write(buildFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32Bytes([1, 2])));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_SHAPE_MISMATCH', file, '"a"', '12 bytes', '8');
    });

    test('bad data_offsets', async () => {
      const file = await write(buildFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, f32Bytes([1])));
      await expectModelError(SafetensorsFile.open(file), 'SAFETENSORS_BAD_HEADER', file, 'data_offsets');
    });
  });
});

describe('SafetensorsWriter', () => {
  test('round trip of every engine dtype; the header follows the format', async () => {
    const file = path.join(dir, 'rt.safetensors');
    const tensors = [
      { name: 'f32', dtype: 'f32' as const, shape: [2, 2], bytes: f32Bytes([1.5, -2, 3, 4]) },
      { name: 'bf16', dtype: 'bf16' as const, shape: [3], bytes: new Uint8Array([1, 2, 3, 4, 5, 6]) },
      { name: 'f16', dtype: 'f16' as const, shape: [1, 1], bytes: new Uint8Array([0x00, 0x3c]) },
      { name: 'i32', dtype: 'i32' as const, shape: [2], bytes: new Uint8Array(new Int32Array([-7, 9]).buffer) },
      { name: 'i64', dtype: 'i64' as const, shape: [1], bytes: new Uint8Array(new BigInt64Array([-5n]).buffer) },
      { name: 'empty', dtype: 'f32' as const, shape: [0, 4], bytes: new Uint8Array(0) },
    ];
    const w = await SafetensorsWriter.create(file, tensors);
    for (const t of tensors) {
      if (t.bytes.length > 0) await w.writeTensor(t.name, t.bytes);
    }
    await w.close();

    // Header checked by hand: LE length, JSON padded with spaces to 8 bytes, offsets back to back.
    const raw = await fs.readFile(file);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
    expect(header.__metadata__).toEqual({ format: 'pt' });
    expect(header.f32).toEqual({ dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] });
    expect(header.bf16).toEqual({ dtype: 'BF16', shape: [3], data_offsets: [16, 22] });
    expect(header.f16).toEqual({ dtype: 'F16', shape: [1, 1], data_offsets: [22, 24] });
    expect(header.i32.data_offsets).toEqual([24, 32]);
    expect(header.i64).toEqual({ dtype: 'I64', shape: [1], data_offsets: [32, 40] });
    expect(header.empty).toEqual({ dtype: 'F32', shape: [0, 4], data_offsets: [40, 40] });
    expect(raw.length).toBe(8 + n + 40);

    const st = await SafetensorsFile.open(file);
    try {
      for (const t of tensors) {
        const r = await st.read(t.name);
        expect(r.dtype).toBe(t.dtype);
        expect(r.shape).toEqual(t.shape);
        expect(Buffer.from(r.bytes).equals(Buffer.from(t.bytes))).toBe(true);
      }
    } finally {
      await st.close();
    }
  });

  test('streams a tensor in chunks', async () => {
    const file = path.join(dir, 'chunks.safetensors');
    const w = await SafetensorsWriter.create(file, [{ name: 'x', dtype: 'f32', shape: [5] }]);
    await w.append('x', f32Bytes([1, 2]));
    await w.append('x', f32Bytes([3, 4, 5]));
    await w.close();
    const st = await SafetensorsFile.open(file);
    const r = await st.read('x');
    await st.close();
    expect(Array.from(new Float32Array(r.bytes.buffer))).toEqual([1, 2, 3, 4, 5]);
  });

  test('out-of-order, oversized and missing writes are errors', async () => {
    const file = path.join(dir, 'w.safetensors');
    const w = await SafetensorsWriter.create(file, [
      { name: 'a', dtype: 'f32', shape: [1] },
      { name: 'b', dtype: 'f32', shape: [1] },
    ]);
    await expectModelError(w.append('b', f32Bytes([1])), 'SAFETENSORS_WRITE', '"a"');
    await expectModelError(w.append('a', f32Bytes([1, 2])), 'SAFETENSORS_WRITE', '"a"');
    await w.append('a', f32Bytes([1]));
    await expectModelError(w.close(), 'SAFETENSORS_WRITE', '"b"');
  });
});

describe('sharded checkpoints', () => {
  const tensors = Array.from({ length: 7 }, (_, i) => ({
    name: `model.layers.${i}.w`,
    dtype: 'f32' as const,
    shape: [i + 1, 10],
  }));
  const bytesOf = (i: number): Uint8Array => {
    const v = new Float32Array((i + 1) * 10);
    for (let j = 0; j < v.length; j++) v[j] = i * 1000 + j;
    return new Uint8Array(v.buffer);
  };

  test('planShards packs in order and gives big tensors their own shard', () => {
    // sizes 40, 80, ..., 280 bytes; max 200: [40, 80] [120] [160] [200] [240] [280]
    const plan = planShards(tensors, 200);
    expect(plan.map((p) => p.tensors.map((t) => t.name.split('.')[2]))).toEqual([['0', '1'], ['2'], ['3'], ['4'], ['5'], ['6']]);
    expect(plan[0].file).toBe('model-00001-of-00006.safetensors');
    expect(plan[5].file).toBe('model-00006-of-00006.safetensors');
    expect(planShards(tensors, 1e9).map((p) => p.file)).toEqual(['model.safetensors']);
  });

  test('write shards + index, read back through the store', async () => {
    const progress: number[] = [];
    const w = await ShardedWriter.create(dir, tensors, { maxShardBytes: 300, onProgress: (done) => progress.push(done) });
    for (let i = 0; i < tensors.length; i++) await w.append(tensors[i].name, bytesOf(i));
    await w.close();

    const total = tensors.reduce((s, t) => s + t.shape[0] * 40, 0);
    expect(progress[progress.length - 1]).toBe(total);
    const index = JSON.parse(await fs.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(total);
    const files = new Set(Object.values(index.weight_map));
    expect(files.size).toBeGreaterThan(1);
    for (const f of files) await fs.access(path.join(dir, f as string));

    const store = await SafetensorsStore.open(dir);
    try {
      expect(store.names().sort()).toEqual(tensors.map((t) => t.name).sort());
      for (let i = 0; i < tensors.length; i++) {
        const r = await store.read(tensors[i].name);
        expect(Buffer.from(r.bytes).equals(Buffer.from(bytesOf(i)))).toBe(true);
      }
      const rows = await store.readRows('model.layers.6.w', 2, 3);
      expect(Array.from(new Float32Array(rows.bytes.buffer)).slice(0, 2)).toEqual([6020, 6021]);
      await expectModelError(store.read('nope'), 'TENSOR_MISSING', 'model.safetensors.index.json', '"nope"');
    } finally {
      await store.close();
    }
  });

  test('an index naming a missing shard', async () => {
    await fs.writeFile(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors' } }),
    );
    await expectModelError(SafetensorsStore.open(dir), 'CHECKPOINT_BAD_INDEX', 'model-00001-of-00002.safetensors');
  });

  test('an index mapping a tensor to a shard that lacks it', async () => {
    const w = await SafetensorsWriter.create(path.join(dir, 'model-00001-of-00001.safetensors'), [{ name: 'a', dtype: 'f32', shape: [1] }]);
    await w.append('a', f32Bytes([1]));
    await w.close();
    await fs.writeFile(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { a: 'model-00001-of-00001.safetensors', b: 'model-00001-of-00001.safetensors' } }),
    );
    const store = await SafetensorsStore.open(dir);
    try {
      expect(Array.from(new Float32Array((await store.read('a')).bytes.buffer))).toEqual([1]);
      await expectModelError(store.read('b'), 'TENSOR_MISSING', 'model-00001-of-00001.safetensors', '"b"');
    } finally {
      await store.close();
    }
  });

  test('a folder without weights', async () => {
    await expectModelError(SafetensorsStore.open(dir), 'CHECKPOINT_NO_WEIGHTS', dir);
  });
});
