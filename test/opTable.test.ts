// The op table is written three times: as data in TypeScript (src/native/opTable.ts, the source of
// ops.ts's signatures), as data in C++ (native/opcheck.cc's opTable(), which checkOp enforces; the
// addon exports it) and as prose in native/ops.md. This test holds them to one another: the same ops
// in the same order, the same tensors in the same order with the same dtypes and optionality, the
// same params with the same kinds and enum values, the same ints. It also checks that the CPU
// backend implements every op, that ops.ts has a function per op, and the wire encoding of `op`.
import * as fs from 'fs';
import * as path from 'path';
import { addon } from '../src/native/addon';
import type { NativeOpSpec } from '../src/native/addonTypes';
import type { Stream, Tensor } from '../src/native/device';
import { opTable, type OpRow } from '../src/native/opTable';
import * as ops from '../src/native/ops';

/** The TypeScript table in the addon's shape. */
function fromTs(table: Readonly<Record<string, OpRow>>): NativeOpSpec[] {
  return Object.entries(table).map(([name, row]) => ({
    name,
    tensors: Object.entries(row.tensors).map(([t, kind]) => ({
      name: t,
      dtype: kind.replace(/\?$/, '') as NativeOpSpec['tensors'][number]['dtype'],
      optional: kind.endsWith('?'),
    })),
    params: Object.entries(row.params).map(([p, kind]) =>
      typeof kind === 'string' ? { name: p, kind } : { name: p, kind: 'enum' as const, values: [...kind] },
    ),
    ints: Object.entries(row.ints).map(([i, need]) => ({ name: i, optional: need === 'optional' })),
  }));
}

/** Splits a cell at the commas that are outside brackets and braces. */
function splitTop(cell: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < cell.length; i++) {
    const ch = cell[i];
    if (ch === '[' || ch === '{') depth++;
    else if (ch === ']' || ch === '}') depth--;
    else if (ch === ',' && depth === 0) {
      parts.push(cell.slice(start, i).trim());
      start = i + 1;
    }
  }
  const last = cell.slice(start).trim();
  if (last !== '' || parts.length > 0) parts.push(last);
  return parts;
}

/** The table of ops.md, in the addon's shape; throws on any cell that breaks ops.md's notation. */
function fromMarkdown(text: string): NativeOpSpec[] {
  const rows = text.split('\n').filter((line) => line.startsWith('| `'));
  return rows.map((line) => {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length !== 7) throw new Error(`ops.md: a row must have 5 cells: ${line}`);
    const [, opCell, tensorCell, paramCell, intsCell] = cells;
    const name = /^`(\w+)`$/.exec(opCell)?.[1];
    if (!name) throw new Error(`ops.md: bad op name ${opCell}`);
    const bad = (what: string, entry: string): Error => new Error(`ops.md ${name}: bad ${what} '${entry}'`);
    const tensors = splitTop(tensorCell).map((entry) => {
      const m = /^(\w+)(?:\[[^\]]+\])?(?: (i32|f32|any))?( optional)?$/.exec(entry);
      if (!m) throw bad('tensor', entry);
      return { name: m[1], dtype: (m[2] ?? 'float') as NativeOpSpec['tensors'][number]['dtype'], optional: m[3] !== undefined };
    });
    const params = splitTop(paramCell).map((entry): NativeOpSpec['params'][number] => {
      const m = /^(\w+)(?:: (?:(boolean)|\{(.*)\}))?$/.exec(entry);
      if (!m) throw bad('param', entry);
      if (m[2]) return { name: m[1], kind: 'boolean' };
      if (m[3] === undefined) return { name: m[1], kind: 'number' };
      const values = m[3].split(',').map((v, code) => {
        const e = /^\s*(\w+)=(\d+)\s*$/.exec(v);
        if (!e || Number(e[2]) !== code) throw bad(`enum value (codes are 0, 1, ... in order)`, v);
        return e[1];
      });
      return { name: m[1], kind: 'enum', values };
    });
    const ints = splitTop(intsCell).map((entry) => {
      const m = /^(\w+)\[[^\]]+\]( optional)?$/.exec(entry);
      if (!m) throw bad('ints', entry);
      return { name: m[1], optional: m[2] !== undefined };
    });
    return { name, tensors, params, ints };
  });
}

const markdown = fs.readFileSync(path.join(__dirname, '..', 'native', 'ops.md'), 'utf8');

describe('one op table: TypeScript, the addon and ops.md agree', () => {
  const ts = fromTs(opTable);

  test('the addon exports the TypeScript table: ops, tensors, dtypes, params, kinds, enum values, ints', () => {
    expect(addon().opTable()).toEqual(ts);
  });

  test('ops.md holds the same table', () => {
    expect(fromMarkdown(markdown)).toEqual(ts);
  });

  test('the comparison sees a change of order, dtype, kind, enum value or optionality', () => {
    const variants: ((t: NativeOpSpec[]) => void)[] = [
      (t) => t[0].tensors.reverse(),
      (t) => (t[0].tensors[0].dtype = 'i32'),
      (t) => (t.find((o) => o.name === 'router')!.params[1].kind = 'number'),
      (t) => t.find((o) => o.name === 'expert_matmul')!.params[0].values!.reverse(),
      (t) => (t[0].ints[0].optional = false),
      (t) => t.reverse(),
    ];
    for (const change of variants) {
      const changed = structuredClone(ts);
      change(changed);
      expect(changed).not.toEqual(addon().opTable());
    }
  });

  test("ops.md's notation is read strictly", () => {
    const row = (tensors: string, params = '', ints = ''): string => `| \`x\` | ${tensors} | ${params} | ${ints} | y |`;
    expect(() => fromMarkdown(row('out[T] bf17'))).toThrow(/bad tensor 'out\[T\] bf17'/);
    expect(() => fromMarkdown(row('out', 'kernel: {grouped=1, dense=0}'))).toThrow(/bad enum value/);
    expect(() => fromMarkdown(row('out', 'flag: bool'))).toThrow(/bad param/);
    expect(() => fromMarkdown(row('out', '', 'counts'))).toThrow(/bad ints 'counts'/);
    expect(fromMarkdown(row('out[T,H], idx[T] i32, bias[H] optional', 'k, on: boolean, mode: {a=0, b=1}', 'n[2] optional'))).toEqual([
      {
        name: 'x',
        tensors: [
          { name: 'out', dtype: 'float', optional: false },
          { name: 'idx', dtype: 'i32', optional: false },
          { name: 'bias', dtype: 'float', optional: true },
        ],
        params: [
          { name: 'k', kind: 'number' },
          { name: 'on', kind: 'boolean' },
          { name: 'mode', kind: 'enum', values: ['a', 'b'] },
        ],
        ints: [{ name: 'n', optional: true }],
      },
    ]);
  });

  test('names are unique within an op, and optional tensors come last', () => {
    for (const op of ts) {
      const names = [...op.tensors, ...op.params, ...op.ints].map((x) => x.name);
      expect({ op: op.name, names: new Set(names).size }).toEqual({ op: op.name, names: names.length });
      const firstOptional = op.tensors.findIndex((t) => t.optional);
      if (firstOptional >= 0) expect(op.tensors.slice(firstOptional).every((t) => t.optional)).toBe(true);
    }
  });

  test('the CPU backend implements exactly the ops of the table', () => {
    const device = addon().openDevice('cpu', 0);
    expect([...device.opNames()].sort()).toEqual(Object.keys(opTable).sort());
  });

  test('ops.ts has one typed function per op (camelCase of its name)', () => {
    const camel = (name: string): string => name.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    for (const name of Object.keys(opTable)) expect([camel(name), typeof (ops as Record<string, unknown>)[camel(name)]]).toEqual([camel(name), 'function']);
  });
});

describe('op puts the arguments on the wire in table order, enums and booleans as codes', () => {
  type Call = { name: string; tensors: unknown[]; params: number[]; ints: number[] };
  const calls: Call[] = [];
  const stream = {
    native: {},
    device: {
      native: {
        op: (_s: unknown, name: string, tensors: unknown[], params: number[], ints: number[]) => calls.push({ name, tensors, params, ints }),
      },
    },
  } as unknown as Stream;
  const t = (id: string): Tensor => ({ native: id }) as unknown as Tensor;
  beforeEach(() => (calls.length = 0));

  test('expert_matmul kernel grouped = 0, dense = 1, grouped_sm90 = 2, then swiglu 0/1; counts as the ints or as a device tensor', () => {
    ops.expertMatmul(stream, t('out'), t('a'), t('w'), [2, 3], 'grouped');
    ops.expertMatmul(stream, t('out'), t('a'), t('w'), [5], 'dense');
    ops.expertMatmul(stream, t('out'), t('a'), t('w'), t('counts'), 'grouped_sm90');
    ops.expertMatmul(stream, t('out'), t('a'), t('w'), [4], 'grouped_sm90', true);
    expect(calls).toEqual([
      { name: 'expert_matmul', tensors: ['out', 'a', 'w', null], params: [0, 0], ints: [2, 3] },
      { name: 'expert_matmul', tensors: ['out', 'a', 'w', null], params: [1, 0], ints: [5] },
      { name: 'expert_matmul', tensors: ['out', 'a', 'w', 'counts'], params: [2, 0], ints: [] },
      { name: 'expert_matmul', tensors: ['out', 'a', 'w', null], params: [2, 1], ints: [4] },
    ]);
  });

  test('router renormalize as 0/1 between k and scale, then scoring, method, groups; moe_unpermute accumulate', () => {
    ops.router(stream, t('idx'), t('w'), t('logits'), 2, true, 0.5);
    ops.router(stream, t('idx'), t('w'), t('logits'), 3, false, 1);
    ops.router(stream, t('idx'), t('w'), t('logits'), 4, true, 2.5, {
      scoring: 'sigmoid',
      method: 'noaux_tc',
      groups: 4,
      topkGroup: 2,
      bias: t('bias'),
      expertGroup: [0, 0, 1, 1, 2, 2, 3, 3],
    });
    ops.moeUnpermute(stream, t('out'), t('y'), t('rowMap'), t('topkW'), true);
    expect(calls.map((c) => [c.tensors, c.params, c.ints])).toEqual([
      [['idx', 'w', 'logits', null], [2, 1, 0.5, 0, 0, 1, 1], []],
      [['idx', 'w', 'logits', null], [3, 0, 1, 0, 0, 1, 1], []],
      [['idx', 'w', 'logits', 'bias'], [4, 1, 2.5, 1, 2, 4, 2], [0, 0, 1, 1, 2, 2, 3, 3]],
      [['out', 'y', 'rowMap', 'topkW'], [1], []],
    ]);
  });

  test('ints concatenated in table order; an absent optional tensor or ints array', () => {
    ops.moeRankCount(stream, t('counts'), t('topkIdx'), [0, 2, 4], [0, 3]);
    ops.attention(stream, t('out'), t('q'), t('k'), t('v'), t('cu'), [0, 5], 0.125);
    ops.attention(stream, t('out'), t('q'), t('k'), t('v'), t('cu'), [0, 5], 0.125, t('kpe'));
    ops.matmul(stream, t('out'), t('a'), t('w'));
    ops.embedding(stream, t('out'), t('table'), t('ids'));
    expect(calls).toEqual([
      { name: 'moe_rank_count', tensors: ['counts', 'topkIdx'], params: [], ints: [0, 2, 4, 0, 3] },
      { name: 'attention', tensors: ['out', 'q', 'k', 'v', 'cu', null], params: [0.125], ints: [0, 5] },
      { name: 'attention', tensors: ['out', 'q', 'k', 'v', 'cu', 'kpe'], params: [0.125], ints: [0, 5] },
      { name: 'matmul', tensors: ['out', 'a', 'w', null], params: [], ints: [] },
      { name: 'embedding', tensors: ['out', 'table', 'ids'], params: [], ints: [] },
    ]);
  });

  test('an enum name the table does not list is refused before the addon', () => {
    expect(() => ops.expertMatmul(stream, t('out'), t('a'), t('w'), [1], 'fast' as ops.ExpertKernel)).toThrow(
      expect.objectContaining({ code: 'EPS_INVALID_ARGUMENT', message: 'expert_matmul: kernel must be one of grouped, dense, grouped_sm90; got "fast"' }),
    );
    expect(calls).toEqual([]);
  });
});
