// Device, Tensor, Stream and Event: the TypeScript face of the addon's objects. Ops enqueue on a
// Stream and return at once; a promise resolves when a stream reaches a point. Native objects are
// freed by dispose() (or `using`), with the addon's finalizers as a backstop.
import { addon, defaultBackend } from './addon';
import type { BackendKind, DType, MemoryCounters, NativeDevice, NativeEvent, NativeStream, NativeTensor } from './addonTypes';
import { bf16ArrayToF32, f16ArrayToF32 } from './bf16';

export const dtypeBytes: Record<DType, number> = { f32: 4, bf16: 2, f16: 2, i32: 4, i64: 8 };

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'bf16' || dtype === 'f16';
}

export class Device {
  private constructor(readonly native: NativeDevice) {}

  /** Opens a device of the backend (the best one the addon has when omitted). */
  static open(backend: BackendKind = defaultBackend(), index = 0): Device {
    return new Device(addon().openDevice(backend, index));
  }

  get backend(): BackendKind {
    return this.native.backend;
  }
  get name(): string {
    return this.native.name;
  }
  get index(): number {
    return this.native.index;
  }

  /** An uninitialised tensor. */
  tensor(dtype: DType, shape: readonly number[]): Tensor {
    return new Tensor(this, this.native.alloc(dtype, [...shape]));
  }
  /**
   * A new stream. highPriority (communication streams): its work is scheduled first as the device's
   * SMs free up, so an all-to-all is not starved by the GEMMs of another stream (CUDA; the CPU ignores it).
   */
  stream(opts: { highPriority?: boolean } = {}): Stream {
    return new Stream(this, this.native.createStream(opts.highPriority ?? false));
  }
  event(): Event {
    return new Event(this.native.createEvent());
  }
  freeBytes(): number {
    return this.native.freeBytes();
  }
  /** How its memory was got and kept since it was opened (allocations from the driver, out-of-memory flushes, held bytes). */
  memoryCounters(): MemoryCounters {
    return this.native.memoryCounters();
  }
  dispose(): void {
    this.native.dispose();
  }
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;

  constructor(
    readonly device: Device,
    readonly native: NativeTensor,
  ) {
    this.shape = native.shape;
    this.dtype = native.dtype;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get byteLength(): number {
    return this.numel * dtypeBytes[this.dtype];
  }
  /** Elements in one row (product of all dims but the first). */
  get rowSize(): number {
    return this.shape.length === 0 ? 1 : this.numel / this.shape[0];
  }

  /** A view of rows [start, start+count) along dimension 0. */
  rows(start: number, count: number): Tensor {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > this.shape[0]) {
      throw new RangeError(`rows(${start}, ${count}) is outside a tensor of ${this.shape[0]} rows`);
    }
    return new Tensor(this.device, this.native.view(start * this.rowSize, [count, ...this.shape.slice(1)]));
  }

  /** A view with another shape of the same number of elements. */
  reshape(shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== this.numel) throw new RangeError(`cannot reshape [${this.shape}] (${this.numel} elements) to [${shape}]`);
    return new Tensor(this.device, this.native.view(0, [...shape]));
  }

  /** Copies raw bytes of this tensor's dtype in, in stream order (the data is copied at call time). */
  upload(stream: Stream, data: ArrayBufferView): void {
    this.native.upload(stream.native, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** The raw bytes, once the stream reaches this point. */
  async bytes(stream: Stream): Promise<ArrayBuffer> {
    return this.native.download(stream.native);
  }

  /** The values once the stream reaches this point: floats widened to f32, integers as i32. */
  async read(stream: Stream): Promise<Float32Array | Int32Array> {
    const raw = await this.native.download(stream.native);
    switch (this.dtype) {
      case 'f32':
        return new Float32Array(raw);
      case 'bf16':
        return bf16ArrayToF32(new Uint16Array(raw));
      case 'f16':
        return f16ArrayToF32(new Uint16Array(raw));
      case 'i32':
        return new Int32Array(raw);
      case 'i64': {
        const wide = new BigInt64Array(raw);
        return Int32Array.from(wide, (v) => Number(v));
      }
    }
  }

  async readFloat32(stream: Stream): Promise<Float32Array> {
    const v = await this.read(stream);
    if (!(v instanceof Float32Array)) throw new TypeError(`readFloat32 of a ${this.dtype} tensor`);
    return v;
  }

  dispose(): void {
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

export class Stream {
  constructor(
    readonly device: Device,
    readonly native: NativeStream,
  ) {}

  /** Records an event at this point of the stream (a new one when none is given). */
  record(event: Event = this.device.event()): Event {
    this.native.record(event.native);
    return event;
  }
  /** Later work on this stream waits for the event's latest record. */
  wait(event: Event): void {
    this.native.wait(event.native);
  }
  /** Resolves once all work enqueued so far has run; rejects with the first failed op's error. */
  synchronize(): Promise<void> {
    return this.native.synchronize();
  }
  dispose(): void {
    this.native.dispose();
  }
}

export class Event {
  constructor(readonly native: NativeEvent) {}
  /** Milliseconds from `start` to this event; both must have completed. */
  elapsedSince(start: Event): number {
    return this.native.elapsedSince(start.native);
  }
  dispose(): void {
    this.native.dispose();
  }
}

/** A tensor of `dtype` holding `data` (converted on the device by the copy op when dtype is not f32). */
export function tensorFromFloat32(device: Device, stream: Stream, dtype: DType, shape: readonly number[], data: Float32Array): Tensor {
  const f32 = device.tensor('f32', shape);
  f32.upload(stream, data);
  if (dtype === 'f32') return f32;
  const out = device.tensor(dtype, shape);
  device.native.op(stream.native, 'copy', [out.native, f32.native], [], []);
  return out;
}

export function tensorFromInt32(device: Device, stream: Stream, shape: readonly number[], data: Int32Array): Tensor {
  const t = device.tensor('i32', shape);
  t.upload(stream, data);
  return t;
}
