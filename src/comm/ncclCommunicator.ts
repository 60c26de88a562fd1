// The Communicator of CUDA clusters: NCCL between the ranks' GPUs. The all-to-all is a group of
// ncclSend/ncclRecv on the caller's stream (enqueued, not waited for: later ops on that stream read
// `recv` in stream order); the all-gather of small host arrays goes through one ncclAllGather on a
// tiny device buffer and resolves once its bytes are back on the host.
//
// The addon exports this surface only when it was built with the CUDA backend (native/cuda/
// nccl_binding.cc); its types live here rather than in addonTypes.ts because nothing else uses it.
import { addon } from '../native/addon';
import type { NativeDevice, NativeStream, NativeTensor } from '../native/addonTypes';
import { Device, type Stream, type Tensor } from '../native/device';
import type { Communicator } from './communicator';

/** native/bindings/nccl_binding.cc's NcclComm. */
export interface NativeNcclComm {
  readonly rank: number;
  readonly world: number;
  allToAll(stream: NativeStream, send: NativeTensor, sendRows: number[], recv: NativeTensor, recvRows: number[]): void;
  /** Resolves with world * local.length int32 values, rank order. */
  allGather(local: Int32Array): Promise<ArrayBuffer>;
  dispose(): void;
}

/** What a CUDA build of the addon adds for NCCL. */
export interface NativeNcclAddon {
  ncclUniqueId(): Uint8Array;
  NcclComm: new (device: NativeDevice, uniqueId: Uint8Array, world: number, rank: number) => NativeNcclComm;
}

export class NcclUnavailableError extends Error {
  readonly code = 'EPS_NCCL_UNAVAILABLE';
}

export class CommunicatorClosedError extends Error {
  readonly code = 'EPS_COMM_CLOSED';
}

function ncclAddon(): NativeNcclAddon {
  const a = addon() as unknown as Partial<NativeNcclAddon>;
  if (typeof a.ncclUniqueId !== 'function' || typeof a.NcclComm !== 'function') {
    throw new NcclUnavailableError('NCCL: this build of the addon has no CUDA backend (rebuild on a host with CUDA, cuBLAS and NCCL)');
  }
  return a as NativeNcclAddon;
}

/** Whether this addon can make NCCL communicators. */
export function hasNccl(): boolean {
  try {
    ncclAddon();
    return true;
  } catch {
    return false;
  }
}

/** A fresh NCCL unique id (rank 0 makes it; every rank joins with the same bytes). */
export function ncclUniqueId(): Uint8Array {
  return ncclAddon().ncclUniqueId();
}

export class NcclCommunicator implements Communicator {
  private native: NativeNcclComm | undefined;

  private constructor(
    native: NativeNcclComm,
    readonly rank: number,
    readonly world: number,
  ) {
    this.native = native;
  }

  /**
   * Joins the communicator on `device` (a CUDA device). Blocks until all `world` ranks have joined
   * with the same `uniqueId` (ncclCommInitRank): every rank is its own process.
   */
  static join(device: Device, uniqueId: Uint8Array, world: number, rank: number): NcclCommunicator {
    if (device.backend !== 'cuda') throw new NcclUnavailableError(`NCCL needs a CUDA device; got a ${device.backend} device`);
    const { NcclComm } = ncclAddon();
    return new NcclCommunicator(new NcclComm(device.native, uniqueId, world, rank), rank, world);
  }

  private comm(what: string): NativeNcclComm {
    if (!this.native) throw new CommunicatorClosedError(`${what}: the NCCL communicator is closed`);
    return this.native;
  }

  async allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void> {
    const comm = this.comm('allToAll');
    if (sendRows.length !== this.world || recvRows.length !== this.world) {
      throw new RangeError(`allToAll: ${sendRows.length} send / ${recvRows.length} recv counts for world ${this.world}`);
    }
    if (send.dtype !== recv.dtype) throw new TypeError(`allToAll: send is ${send.dtype}, recv ${recv.dtype}`);
    // Row sizes, totals and the device are checked natively, where the bytes are.
    comm.allToAll(stream.native, send.native, [...sendRows], recv.native, [...recvRows]);
  }

  async allGather(local: Int32Array): Promise<Int32Array[]> {
    const bytes = await this.comm('allGather').allGather(local);
    const all = new Int32Array(bytes);
    const n = local.length;
    if (all.length !== n * this.world) throw new RangeError(`allGather: got ${all.length} values for ${this.world} ranks of ${n}`);
    return Array.from({ length: this.world }, (_, r) => all.slice(r * n, (r + 1) * n));
  }

  async close(): Promise<void> {
    this.native?.dispose();
    this.native = undefined;
  }
}

/** For communicatorFactory.ts (NcclModule): joins on the rank's CUDA device. */
export async function createNcclCommunicator(opts: {
  rank: number;
  world: number;
  uniqueId: Uint8Array;
  deviceIndex: number;
}): Promise<Communicator> {
  return NcclCommunicator.join(Device.open('cuda', opts.deviceIndex), opts.uniqueId, opts.world, opts.rank);
}
