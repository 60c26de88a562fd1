// All the safetensors of one checkpoint folder behind one name -> tensor map:
//   - sharded: model.safetensors.index.json {"weight_map": {name: "model-00001-of-00004.safetensors"}}
//   - single:  model.safetensors
//   - otherwise every *.safetensors file in the folder (hand-made folders).
// Shards open on first use, so a rank that holds a few experts opens only the files they live in.
import { promises as fs } from 'fs';
import * as path from 'path';
import type { DType } from '../native/addonTypes';
import { ModelError } from './errors';
import type { TensorEntry } from './safetensors';
import { SafetensorsFile, type RawTensor } from './safetensorsReader';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

export class SafetensorsStore {
  private readonly opened = new Map<string, Promise<SafetensorsFile>>();

  private constructor(
    readonly dir: string,
    /** Tensor name -> file name (relative to dir). */
    private readonly weightMap: Map<string, string>,
    /** The index file, when the checkpoint is sharded (for messages). */
    readonly indexFile: string | undefined,
  ) {}

  static async open(dir: string): Promise<SafetensorsStore> {
    const indexPath = path.join(dir, INDEX_FILE);
    if (await exists(indexPath)) return SafetensorsStore.openIndexed(dir, indexPath);
    const single = path.join(dir, SINGLE_FILE);
    const files = (await exists(single)) ? [SINGLE_FILE] : (await fs.readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
    if (files.length === 0) {
      throw new ModelError('CHECKPOINT_NO_WEIGHTS', `${dir}: no ${INDEX_FILE}, ${SINGLE_FILE} or other *.safetensors file`, dir);
    }
    const store = new SafetensorsStore(dir, new Map(), undefined);
    try {
      for (const f of files) {
        const file = await store.file(f);
        for (const name of file.names()) {
          const prior = store.weightMap.get(name);
          if (prior !== undefined) {
            throw new ModelError('CHECKPOINT_BAD_INDEX', `${dir}: tensor "${name}" is in both ${prior} and ${f}`, dir);
          }
          store.weightMap.set(name, f);
        }
      }
    } catch (e) {
      await store.close();
      throw e;
    }
    return store;
  }

  private static async openIndexed(dir: string, indexPath: string): Promise<SafetensorsStore> {
    const badIndex = (problem: string): ModelError => new ModelError('CHECKPOINT_BAD_INDEX', `${indexPath}: ${problem}`, indexPath);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await fs.readFile(indexPath, 'utf8'));
    } catch (e) {
      throw badIndex(`not valid JSON (${(e as Error).message})`);
    }
    const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw badIndex('no "weight_map" object');
    }
    const map = new Map<string, string>();
    for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) {
        throw badIndex(`weight_map["${name}"] is ${JSON.stringify(file)}, not a file name in the folder`);
      }
      map.set(name, file);
    }
    for (const file of new Set(map.values())) {
      if (!(await exists(path.join(dir, file)))) throw badIndex(`names shard ${file}, which is not in ${dir}`);
    }
    return new SafetensorsStore(dir, map, indexPath);
  }

  private file(fileName: string): Promise<SafetensorsFile> {
    let f = this.opened.get(fileName);
    if (!f) {
      f = SafetensorsFile.open(path.join(this.dir, fileName));
      this.opened.set(fileName, f);
    }
    return f;
  }

  names(): string[] {
    return [...this.weightMap.keys()];
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  /** The shard that holds `name` (relative to the folder). */
  fileOf(name: string): string {
    const f = this.weightMap.get(name);
    if (f === undefined) {
      const where = this.indexFile ?? this.dir;
      throw new ModelError('TENSOR_MISSING', `${where}: checkpoint has no tensor "${name}"`, where);
    }
    return f;
  }

  private async fileHolding(name: string): Promise<SafetensorsFile> {
    const file = await this.file(this.fileOf(name));
    if (!file.has(name)) {
      throw new ModelError(
        'TENSOR_MISSING',
        `${this.indexFile}: maps "${name}" to ${file.path}, whose header has no such tensor`,
        file.path,
      );
    }
    return file;
  }

  /** Header entry of a tensor (opens its shard). */
  async entry(name: string): Promise<TensorEntry & { file: string }> {
    const file = await this.fileHolding(name);
    return { ...file.entry(name), file: file.path };
  }

  async dtypeOf(name: string): Promise<DType> {
    return (await this.fileHolding(name)).dtypeOf(name);
  }

  async read(name: string): Promise<RawTensor> {
    return (await this.fileHolding(name)).read(name);
  }

  async readRows(name: string, first: number, count: number, dst?: Uint8Array): Promise<RawTensor> {
    return (await this.fileHolding(name)).readRows(name, first, count, dst);
  }

  async close(): Promise<void> {
    const files = [...this.opened.values()];
    this.opened.clear();
    await Promise.all(
      files.map(async (f) => {
        try {
          await (await f).close();
        } catch {
          // a shard that failed to open has nothing to close
        }
      }),
    );
  }
}
