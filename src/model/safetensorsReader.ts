// Reads tensors out of safetensors files without loading files whole: the header on open, then each
// requested tensor (or a run of rows along dim 0: some experts of a fused [E, ...] tensor) with one
// positioned FileHandle.read into the destination buffer.
import { promises as fs } from 'fs';
import type { FileHandle } from 'fs/promises';
import type { DType } from '../native/addonTypes';
import { ModelError } from './errors';
import { engineDType, numel, parseHeaderJson, parseHeaderLength, type SafetensorsHeader, type TensorEntry } from './safetensors';

/** A tensor's raw little-endian bytes in the file's dtype. */
export interface RawTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

/** fs.read moves at most 2 GiB - 1 per call. */
const MAX_READ = 1 << 30;

/** Reads exactly dst.length bytes at `position`, or fails naming the file. */
export async function readFully(handle: FileHandle, dst: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < dst.length) {
    const want = Math.min(dst.length - done, MAX_READ);
    const { bytesRead } = await handle.read(dst, done, want, position + done);
    if (bytesRead === 0) {
      throw new ModelError(
        'SAFETENSORS_TRUNCATED',
        `${file}: file ended at byte ${position + done} while reading ${dst.length} bytes from ${position}`,
        file,
      );
    }
    done += bytesRead;
  }
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly header: SafetensorsHeader,
    readonly size: number,
  ) {}

  static async open(file: string): Promise<SafetensorsFile> {
    const handle = await fs.open(file, 'r');
    try {
      const { size } = await handle.stat();
      const prefix = new Uint8Array(Math.min(8, size));
      await readFully(handle, prefix, 0, file);
      const jsonLength = parseHeaderLength(prefix, size, file);
      const json = new Uint8Array(jsonLength);
      await readFully(handle, json, 8, file);
      return new SafetensorsFile(file, handle, parseHeaderJson(json, size, file), size);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  entry(name: string): TensorEntry {
    const entry = this.header.tensors.get(name);
    if (!entry) throw new ModelError('TENSOR_MISSING', `${this.path}: no tensor "${name}"`, this.path);
    return entry;
  }

  /** The engine dtype of a tensor, or an error for dtypes the engine does not take. */
  dtypeOf(name: string): DType {
    const entry = this.entry(name);
    const dtype = engineDType(entry.dtype);
    if (!dtype) {
      throw new ModelError(
        'SAFETENSORS_UNKNOWN_DTYPE',
        `${this.path}: tensor "${name}" has dtype ${entry.dtype}; the engine takes F32, BF16, F16, I32, I64`,
        this.path,
      );
    }
    return dtype;
  }

  async read(name: string): Promise<RawTensor> {
    const entry = this.entry(name);
    const dtype = this.dtypeOf(name);
    const bytes = new Uint8Array(entry.byteLength);
    await readFully(this.handle, bytes, entry.start, this.path);
    return { name, dtype, shape: [...entry.shape], bytes };
  }

  /**
   * Rows [first, first + count) along dim 0 (e.g. experts of a fused [E, N, K] tensor), read alone.
   * With `dst`, reads into it (dst.length must be the slice's byte length) and returns it.
   */
  async readRows(name: string, first: number, count: number, dst?: Uint8Array): Promise<RawTensor> {
    const entry = this.entry(name);
    const dtype = this.dtypeOf(name);
    const rows = entry.shape[0];
    const inRange =
      entry.shape.length > 0 &&
      Number.isSafeInteger(first) &&
      Number.isSafeInteger(count) &&
      first >= 0 &&
      count >= 0 &&
      first + count <= rows;
    if (!inRange) {
      throw new ModelError(
        'SAFETENSORS_BAD_SLICE',
        `${this.path}: rows [${first}, ${first + count}) of "${name}" [${entry.shape.join(', ')}] are out of range`,
        this.path,
      );
    }
    const rowBytes = rows === 0 ? 0 : entry.byteLength / rows;
    const shape = [count, ...entry.shape.slice(1)];
    const byteLength = count * rowBytes;
    if (dst && dst.length !== byteLength) {
      throw new ModelError(
        'SAFETENSORS_BAD_SLICE',
        `${this.path}: "${name}" slice is ${byteLength} bytes, destination ${dst.length}`,
        this.path,
      );
    }
    const bytes = dst ?? new Uint8Array(byteLength);
    await readFully(this.handle, bytes, entry.start + first * rowBytes, this.path);
    return { name, dtype, shape, bytes };
  }

  /** Elements of a tensor (without reading it). */
  numel(name: string): number {
    return numel(this.entry(name).shape);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
