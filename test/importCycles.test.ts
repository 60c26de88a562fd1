// No import cycle in src/: neither between files nor between the top-level folders of src/ (imports go
// downward only: cli -> cluster -> comm, engine -> moe -> native, model; comm and cluster on rpc).
// Every relative import counts: `import`, `import type`, `export ... from`, side-effect `import '...'`,
// `require('...')` and `import('...')`. The same reading as /work/shared/tools/import-cycles.py.
import * as fs from 'node:fs';
import * as path from 'node:path';

const SRC = path.resolve(__dirname, '..', 'src');

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+['"](\.[^'"]+)['"]|(?:^|\n)\s*import\s+['"](\.[^'"]+)['"]|require\(\s*['"](\.[^'"]+)['"]\s*\)|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;

type Graph = Map<string, Set<string>>;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** src-relative file -> the src-relative files it imports. */
function importGraph(src: string): Graph {
  const files = new Set(sourceFiles(src));
  const resolve = (from: string, spec: string): string | undefined => {
    const base = path.normalize(path.join(path.dirname(from), spec));
    return [`${base}.ts`, path.join(base, 'index.ts'), base].find((c) => files.has(c));
  };
  const rel = (p: string) => path.relative(src, p).split(path.sep).join('/');
  const graph: Graph = new Map();
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8').replace(/\/\/[^\n]*/g, '');
    const targets = new Set<string>();
    for (const m of text.matchAll(IMPORT)) {
      const spec = m.slice(1).find((g) => g !== undefined)!;
      const target = resolve(file, spec);
      if (target && target !== file) targets.add(rel(target));
    }
    graph.set(rel(file), targets);
  }
  return graph;
}

/** The top-level folder of a src-relative file ('.' for files directly in src/). */
function folderOf(file: string): string {
  return file.includes('/') ? file.slice(0, file.indexOf('/')) : '.';
}

function folderGraph(files: Graph): Graph {
  const graph: Graph = new Map();
  for (const [file, targets] of files) {
    const from = folderOf(file);
    if (!graph.has(from)) graph.set(from, new Set());
    for (const t of targets) {
      const to = folderOf(t);
      if (!graph.has(to)) graph.set(to, new Set());
      if (to !== from) graph.get(from)!.add(to);
    }
  }
  return graph;
}

/** The strongly connected components of more than one node (Tarjan): each is a cycle, or several. */
function cycles(graph: Graph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) out.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out.map((c) => c.sort()).sort((a, b) => a[0].localeCompare(b[0]));
}

describe('import cycles in src/', () => {
  const files = importGraph(SRC);

  test('the graph sees every kind of relative import', () => {
    expect(files.size).toBeGreaterThan(50);
    // import type, and a dynamic import() (cli/launch.ts loads the trace merger lazily).
    expect(files.get('cluster/router.ts')).toContain('cluster/tuning.ts');
    expect(files.get('cli/launch.ts')).toContain('trace/merge.ts');
  });

  test('no cycle between files', () => {
    expect(cycles(files).map((c) => c.join(' <-> '))).toEqual([]);
  });

  test('no cycle between the top-level folders of src/', () => {
    expect(cycles(folderGraph(files)).map((c) => c.join(' <-> '))).toEqual([]);
  });

  test('a cycle is found when there is one (the checker checks)', () => {
    const g: Graph = new Map([
      ['a/x.ts', new Set(['b/y.ts'])],
      ['b/y.ts', new Set(['a/z.ts'])],
      ['a/z.ts', new Set<string>()],
      ['c/w.ts', new Set(['c/v.ts'])],
      ['c/v.ts', new Set(['c/w.ts'])],
    ]);
    expect(cycles(g)).toEqual([['c/v.ts', 'c/w.ts']]);
    expect(cycles(folderGraph(g))).toEqual([['a', 'b']]);
  });
});
