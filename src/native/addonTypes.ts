// The typed surface of the native addon (build/Release/eps_native.node). Everything TypeScript
// knows about the addon is here; device.ts and ops.ts wrap it.

export type DType = 'f32' | 'bf16' | 'f16' | 'i32' | 'i64';
export type BackendKind = 'cpu' | 'cuda';

export interface NativeDeviceInfo {
  backend: BackendKind;
  index: number;
  name: string;
  totalBytes: number;
}

export interface NativeTensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly byteLength: number;
  /** A tensor sharing this one's storage, `offsetElements` in, with the given shape. */
  view(offsetElements: number, shape: number[]): NativeTensor;
  /** Copies `data` (bytes in this tensor's dtype) in, in stream order. The bytes are copied at call time. */
  upload(stream: NativeStream, data: Uint8Array): void;
  /** Resolves with a copy of the tensor's bytes once the stream reaches this point. */
  download(stream: NativeStream): Promise<ArrayBuffer>;
  dispose(): void;
}

export interface NativeStream {
  record(event: NativeEvent): void;
  wait(event: NativeEvent): void;
  /** Resolves once all work enqueued so far has run; rejects with the first failed op's error. */
  synchronize(): Promise<void>;
  dispose(): void;
}

export interface NativeEvent {
  /** Milliseconds from `start` to this event; both must have completed. */
  elapsedSince(start: NativeEvent): number;
  dispose(): void;
}

/** How a device's memory was got and kept since its backend was made (native/backend.h MemoryCounters). */
export interface MemoryCounters {
  /** Blocks got from the system (cudaMalloc; the CPU's heap, one per tensor). */
  allocations: number;
  allocatedBytes: number;
  /** Host time spent getting them. */
  allocateMs: number;
  /** Times the device was full and the cache was flushed (CUDA: a device-wide wait, then the cache reclaimed, its idle blocks freed if need be). */
  outOfMemoryFlushes: number;
  /** Held now: tensors and cache. */
  reservedBytes: number;
  /** Of reservedBytes, the cache's (idle, or waiting for the streams to pass them). */
  cachedBytes: number;
}

export interface NativeDevice {
  readonly backend: BackendKind;
  readonly index: number;
  readonly name: string;
  /** The expert_matmul kernels it runs as themselves (others run as another: ops.md), e.g. ['grouped', 'dense', 'grouped_sm90']. */
  readonly expertKernels?: string[];
  /** The attention kernels it can run: ['reference'] on the CPU, ['sm80'] or ['sm80', 'sm90'] on CUDA (native/backend.h). */
  readonly attentionKernels?: string[];
  alloc(dtype: DType, shape: number[]): NativeTensor;
  createStream(highPriority?: boolean): NativeStream;
  createEvent(): NativeEvent;
  freeBytes(): number;
  memoryCounters(): MemoryCounters;
  opNames(): string[];
  /** Checks the call against native/ops.md (throws naming the op and argument), then enqueues it. */
  op(stream: NativeStream, name: string, tensors: (NativeTensor | null)[], params: number[], ints: number[]): void;
  dispose(): void;
}

/** One op of the addon's op table (native/opcheck.h), as opTable() returns it. */
export interface NativeOpSpec {
  name: string;
  tensors: { name: string; dtype: 'float' | 'i32' | 'f32' | 'any'; optional: boolean }[];
  params: { name: string; kind: 'number' | 'boolean' | 'enum'; values?: string[] }[];
  ints: { name: string; optional: boolean }[];
}

export interface NativeAddon {
  /** Backends compiled in, e.g. ['cpu'] or ['cpu', 'cuda']. */
  backends(): BackendKind[];
  devices(backend: BackendKind): NativeDeviceInfo[];
  openDevice(backend: BackendKind, index: number): NativeDevice;
  /** Versions of what the addon was built against (cuda, cublas, nccl where present). */
  versions(): Record<string, string>;
  /** The op table checkOp enforces; src/native/opTable.ts must match it (test/opTable.test.ts). */
  opTable(): NativeOpSpec[];
}
