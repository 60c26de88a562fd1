// Streams tensors to safetensors files one at a time: the header (which must state every offset)
// is written first from the declared tensor list, then each tensor's bytes in that order, in as
// many chunks as the producer likes. Nothing but the current chunk is held in memory, so a 90 GB
// checkpoint is written with a few MB of RAM. ShardedWriter cuts the list into files of at most
// maxShardBytes and writes model.safetensors.index.json, as transformers' save_pretrained does.
import { promises as fs } from 'fs';
import type { FileHandle } from 'fs/promises';
import * as path from 'path';
import { ModelError } from './errors';
import { encodeHeader, tensorBytes, type TensorSpec } from './safetensors';
import { INDEX_FILE, SINGLE_FILE } from './safetensorsStore';

/** transformers writes {"format": "pt"}; its loader checks the format key. */
export const DEFAULT_METADATA: Record<string, string> = { format: 'pt' };

export class SafetensorsWriter {
  private index = 0;
  private writtenOfCurrent = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly tensors: readonly TensorSpec[],
  ) {}

  static async create(
    file: string,
    tensors: readonly TensorSpec[],
    metadata: Record<string, string> = DEFAULT_METADATA,
  ): Promise<SafetensorsWriter> {
    const header = encodeHeader(tensors, metadata);
    const handle = await fs.open(file, 'w');
    try {
      await writeAll(handle, header);
    } catch (e) {
      await handle.close();
      throw e;
    }
    const w = new SafetensorsWriter(file, handle, tensors);
    w.skipEmpty();
    return w;
  }

  /** The tensor the next bytes belong to; undefined once all are written. */
  get current(): TensorSpec | undefined {
    return this.tensors[this.index];
  }

  private skipEmpty(): void {
    while (this.index < this.tensors.length && tensorBytes(this.tensors[this.index]) === 0) this.index++;
  }

  private fail(problem: string): ModelError {
    return new ModelError('SAFETENSORS_WRITE', `${this.path}: ${problem}`, this.path);
  }

  /**
   * Appends bytes of tensor `name` (which must be the current one). A chunk may not run past the
   * tensor's end; the writer moves to the next tensor when this one is complete.
   */
  async append(name: string, chunk: Uint8Array): Promise<void> {
    const t = this.current;
    if (!t) throw this.fail(`all ${this.tensors.length} tensors are written; got more bytes for "${name}"`);
    if (t.name !== name) throw this.fail(`expected bytes of "${t.name}", got "${name}" (tensors go in declared order)`);
    const total = tensorBytes(t);
    if (this.writtenOfCurrent + chunk.length > total) {
      throw this.fail(`"${name}" is ${total} bytes; ${this.writtenOfCurrent + chunk.length} were given`);
    }
    await writeAll(this.handle, chunk);
    this.writtenOfCurrent += chunk.length;
    if (this.writtenOfCurrent === total) {
      this.index++;
      this.writtenOfCurrent = 0;
      this.skipEmpty();
    }
  }

  /** Writes one whole tensor. */
  async writeTensor(name: string, bytes: Uint8Array): Promise<void> {
    const t = this.current;
    if (t && t.name === name && bytes.length !== tensorBytes(t)) {
      throw this.fail(`"${name}" is ${tensorBytes(t)} bytes; ${bytes.length} were given`);
    }
    await this.append(name, bytes);
  }

  /** Closes the file; fails if a declared tensor was not (fully) written. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
    const t = this.current;
    if (t) throw this.fail(`closed before tensor "${t.name}" was written (${this.writtenOfCurrent} of ${tensorBytes(t)} bytes)`);
  }

  /** Closes without checks (after a failure elsewhere). */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(bytes.length - done, 1 << 30));
    done += bytesWritten;
  }
}

export interface ShardPlan {
  /** File name inside the folder. */
  file: string;
  tensors: TensorSpec[];
  bytes: number;
}

/**
 * Cuts tensors (in order) into shards of at most maxShardBytes of data; a tensor larger than that
 * gets a shard of its own. One shard is named model.safetensors, several
 * model-00001-of-0000N.safetensors (the names save_pretrained uses).
 */
export function planShards(tensors: readonly TensorSpec[], maxShardBytes: number): ShardPlan[] {
  const groups: { tensors: TensorSpec[]; bytes: number }[] = [];
  let cur: { tensors: TensorSpec[]; bytes: number } | undefined;
  for (const t of tensors) {
    const b = tensorBytes(t);
    if (!cur || (cur.tensors.length > 0 && cur.bytes + b > maxShardBytes)) {
      cur = { tensors: [], bytes: 0 };
      groups.push(cur);
    }
    cur.tensors.push(t);
    cur.bytes += b;
  }
  if (groups.length === 0) groups.push({ tensors: [], bytes: 0 });
  const n = groups.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  return groups.map((g, i) => ({
    file: n === 1 ? SINGLE_FILE : `model-${pad(i + 1)}-of-${pad(n)}.safetensors`,
    tensors: g.tensors,
    bytes: g.bytes,
  }));
}

/** Writes a checkpoint's tensors into one file or several shards plus the index. */
export class ShardedWriter {
  private shard = -1;
  private writer: SafetensorsWriter | undefined;
  private written = 0;
  readonly totalBytes: number;

  private constructor(
    readonly dir: string,
    readonly shards: readonly ShardPlan[],
    private readonly metadata: Record<string, string>,
    private readonly onProgress?: (written: number, total: number) => void,
  ) {
    this.totalBytes = shards.reduce((s, p) => s + p.bytes, 0);
  }

  static async create(
    dir: string,
    tensors: readonly TensorSpec[],
    opts: {
      maxShardBytes: number;
      metadata?: Record<string, string>;
      onProgress?: (written: number, total: number) => void;
    },
  ): Promise<ShardedWriter> {
    await fs.mkdir(dir, { recursive: true });
    const w = new ShardedWriter(dir, planShards(tensors, opts.maxShardBytes), opts.metadata ?? DEFAULT_METADATA, opts.onProgress);
    await w.nextShardIfDone();
    return w;
  }

  private async nextShardIfDone(): Promise<void> {
    while (!this.writer || this.writer.current === undefined) {
      if (this.writer) await this.writer.close();
      this.writer = undefined;
      if (this.shard + 1 >= this.shards.length) return;
      this.shard++;
      const plan = this.shards[this.shard];
      this.writer = await SafetensorsWriter.create(path.join(this.dir, plan.file), plan.tensors, this.metadata);
    }
  }

  /** Appends bytes of tensor `name`; tensors go in the order given to create(). */
  async append(name: string, chunk: Uint8Array): Promise<void> {
    if (!this.writer) {
      throw new ModelError('SAFETENSORS_WRITE', `${this.dir}: all tensors are written; got more bytes for "${name}"`, this.dir);
    }
    await this.writer.append(name, chunk);
    this.written += chunk.length;
    this.onProgress?.(this.written, this.totalBytes);
    await this.nextShardIfDone();
  }

  /** Finishes: checks every tensor was written, and writes the index when there are several shards. */
  async close(): Promise<void> {
    if (this.writer) {
      const w = this.writer;
      this.writer = undefined;
      await w.close(); // throws naming the unwritten tensor
    }
    if (this.shards.length > 1) {
      const weightMap: Record<string, string> = {};
      for (const s of this.shards) for (const t of s.tensors) weightMap[t.name] = s.file;
      const index = { metadata: { total_size: this.totalBytes }, weight_map: weightMap };
      await fs.writeFile(path.join(this.dir, INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
    }
  }

  async abort(): Promise<void> {
    const w = this.writer;
    this.writer = undefined;
    await w?.abort();
  }
}
