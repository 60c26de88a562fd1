// The Communicator of the CPU backend: all-to-all and all-gather over the gRPC data plane. Tensor
// bytes leave the device once per collective (the stream is at that point anyway: the CPU backend's
// all-to-all is synchronous by contract) and come back as one upload in stream order.
import { dtypeBytes, type Stream, type Tensor } from '../native/device';
import { sum } from '../util/arrays';
import type { Communicator } from './communicator';
import type { DataPlane } from './dataPlane';

export class GrpcCommunicator implements Communicator {
  readonly rank: number;
  readonly world: number;

  constructor(private readonly plane: DataPlane) {
    this.rank = plane.rank;
    this.world = plane.world;
  }

  async allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void> {
    // Numbered before the first await: every rank numbers its collectives in call order.
    const collective = this.plane.reserve();
    if (sendRows.length !== this.world || recvRows.length !== this.world) {
      throw new RangeError(`allToAll: ${sendRows.length} send / ${recvRows.length} recv counts for world ${this.world}`);
    }
    const rowBytes = rowBytesOf(send);
    const recvRowBytes = rowBytesOf(recv);
    if (rowBytes !== recvRowBytes) throw new RangeError(`allToAll: send rows of ${rowBytes} bytes, recv rows of ${recvRowBytes}`);
    const totalSend = sum(sendRows);
    const totalRecv = sum(recvRows);
    const sendBytes = totalSend > 0 ? new Uint8Array(await send.rows(0, totalSend).bytes(stream)) : new Uint8Array(0);

    const parts: Uint8Array[] = [];
    let offset = 0;
    for (const rows of sendRows) {
      parts.push(sendBytes.subarray(offset, offset + rows * rowBytes));
      offset += rows * rowBytes;
    }
    const received = await this.plane.exchange(parts, collective);

    const out = new Uint8Array(totalRecv * rowBytes);
    offset = 0;
    for (let peer = 0; peer < this.world; peer++) {
      const expected = recvRows[peer] * rowBytes;
      if (received[peer].byteLength !== expected) {
        throw new RangeError(
          `allToAll: rank ${peer} sent ${received[peer].byteLength} bytes, expected ${recvRows[peer]} rows (${expected} bytes)`,
        );
      }
      out.set(received[peer], offset);
      offset += expected;
    }
    if (totalRecv > 0) recv.rows(0, totalRecv).upload(stream, out);
  }

  async allGather(local: Int32Array): Promise<Int32Array[]> {
    const got = await this.plane.allGather(new Uint8Array(local.buffer, local.byteOffset, local.byteLength));
    return got.map((bytes, peer) => {
      if (bytes.byteLength !== local.byteLength) {
        throw new RangeError(`allGather: rank ${peer} sent ${bytes.byteLength} bytes, this rank ${local.byteLength}`);
      }
      // Copied: a received Buffer may sit at an offset that is not a multiple of 4.
      return new Int32Array(Uint8Array.from(bytes).buffer);
    });
  }

  close(): Promise<void> {
    return this.plane.close();
  }
}

/** Bytes of one row; from the shape, so that a tensor of zero rows still has a row width. */
function rowBytesOf(t: Tensor): number {
  return t.shape.slice(1).reduce((a, b) => a * b, 1) * dtypeBytes[t.dtype];
}
