// The CPU data plane over real gRPC on 127.0.0.1: several ranks in this one process, each with its
// own server. Bytes sent are made from (sender, receiver, index) so every byte received can be checked.
import * as grpc from '@grpc/grpc-js';
import { DataPlane, FRAME_BYTES } from '../src/comm/dataPlane';
import { GrpcCommunicator } from '../src/comm/grpcCommunicator';
import { CollectiveTimeoutError, PeerLostError } from '../src/rpc/errors';
import { rankService, type DataFrameMsg, type ExchangeSummaryMsg } from '../src/rpc/protos';
import { Device, tensorFromFloat32 } from '../src/native/device';

interface TestRank {
  server: grpc.Server;
  plane: DataPlane;
}

async function startRanks(world: number, collectiveTimeoutMs = 10_000, clusterIds?: string[]): Promise<TestRank[]> {
  const servers: grpc.Server[] = [];
  const ports: number[] = [];
  const planes: DataPlane[] = [];
  for (let r = 0; r < world; r++) {
    const server = new grpc.Server();
    server.addService(rankService(), {
      Exchange: (call: grpc.ServerReadableStream<DataFrameMsg, ExchangeSummaryMsg>, cb: grpc.sendUnaryData<ExchangeSummaryMsg>) =>
        planes[r].acceptStream(call, cb),
    } as grpc.UntypedServiceImplementation);
    ports.push(
      await new Promise<number>((res, rej) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
      ),
    );
    servers.push(server);
  }
  const peers = ports.map((p) => `127.0.0.1:${p}`);
  for (let r = 0; r < world; r++) {
    planes.push(new DataPlane({ rank: r, world, clusterId: clusterIds?.[r] ?? 'test-cluster', peers, collectiveTimeoutMs }));
  }
  for (const plane of planes) plane.connect();
  return servers.map((server, r) => ({ server, plane: planes[r] }));
}

async function stopRanks(ranks: TestRank[]): Promise<void> {
  for (const r of ranks) {
    await r.plane.close();
    r.server.forceShutdown();
  }
}

/** The bytes rank `from` sends to rank `to` in collective `c`: deterministic, distinct per triple. */
function payload(from: number, to: number, c: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (from * 31 + to * 7 + c * 13 + i) & 0xff;
  return out;
}

describe('DataPlane', () => {
  test('an all-to-all among 3 ranks delivers every buffer, including empty and multi-frame ones', async () => {
    const ranks = await startRanks(3);
    try {
      // Bytes from rank `from` (row) to rank `to` (column): some empty, one cut into 3 frames.
      const sizes = [
        [5, 0, 70],
        [40, 5, 0],
        [2 * FRAME_BYTES + 123, 90, 5],
      ];
      const size = (from: number, to: number): number => sizes[from][to];
      const got = await Promise.all(ranks.map((r, from) => r.plane.exchange([0, 1, 2].map((to) => payload(from, to, 1, size(from, to))))));
      for (let to = 0; to < 3; to++) {
        for (let from = 0; from < 3; from++) {
          expect(Buffer.from(got[to][from]).equals(Buffer.from(payload(from, to, 1, size(from, to))))).toBe(true);
        }
      }
      expect(got[1][0].byteLength).toBe(0);
    } finally {
      await stopRanks(ranks);
    }
  });

  test('collectives match by call order even when ranks call them at different times', async () => {
    const ranks = await startRanks(2);
    try {
      const run = async (r: TestRank, rank: number): Promise<Uint8Array[][]> => {
        const results: Promise<Uint8Array[]>[] = [];
        for (let c = 1; c <= 5; c++) {
          if (rank === 1) await new Promise((res) => setTimeout(res, 5)); // rank 1 lags behind
          results.push(r.plane.exchange([0, 1].map((to) => payload(rank, to, c, 100 + c))));
        }
        return Promise.all(results);
      };
      const [r0, r1] = await Promise.all([run(ranks[0], 0), run(ranks[1], 1)]);
      for (let c = 1; c <= 5; c++) {
        expect(Buffer.from(r0[c - 1][1]).equals(Buffer.from(payload(1, 0, c, 100 + c)))).toBe(true);
        expect(Buffer.from(r1[c - 1][0]).equals(Buffer.from(payload(0, 1, c, 100 + c)))).toBe(true);
      }
    } finally {
      await stopRanks(ranks);
    }
  });

  test('a peer that goes away fails the pending collective at once', async () => {
    const ranks = await startRanks(3);
    try {
      // Rank 2 dies without taking part: its server and its streams close.
      await ranks[2].plane.close();
      ranks[2].server.forceShutdown();
      const t0 = Date.now();
      const pending = ranks[0].plane.exchange([0, 1, 2].map((to) => payload(0, to, 1, 8)));
      await expect(pending).rejects.toBeInstanceOf(PeerLostError);
      expect(Date.now() - t0).toBeLessThan(5000);
      // And every later collective fails too: the plane is broken for good.
      await expect(ranks[0].plane.exchange([0, 1, 2].map(() => new Uint8Array(1)))).rejects.toBeInstanceOf(PeerLostError);
    } finally {
      await stopRanks(ranks);
    }
  });

  test('a peer that stays silent fails the collective after collectiveTimeoutMs', async () => {
    const ranks = await startRanks(2, 300);
    try {
      const t0 = Date.now();
      await expect(ranks[0].plane.exchange([new Uint8Array(1), new Uint8Array(1)])).rejects.toBeInstanceOf(CollectiveTimeoutError);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    } finally {
      await stopRanks(ranks);
    }
  });

  test('streams from another cluster are refused', async () => {
    const ranks = await startRanks(2, 1000, ['cluster-a', 'cluster-b']);
    try {
      // Rank 1's hello to rank 0 carries cluster-b: rank 0 refuses it, and rank 1 sees its stream fail.
      await expect(ranks[1].plane.exchange([new Uint8Array(1), new Uint8Array(1)])).rejects.toBeInstanceOf(PeerLostError);
    } finally {
      await stopRanks(ranks);
    }
  });
});

describe('GrpcCommunicator on CPU tensors', () => {
  test('allToAll moves rows between 2 ranks and allGather gathers in rank order', async () => {
    const ranks = await startRanks(2);
    const device = Device.open('cpu');
    try {
      const H = 3;
      // Rank r's send rows are r*100 + row*10 + col; rank 0 sends 1 row to itself and 2 to rank 1,
      // rank 1 sends 3 rows to rank 0 and none to itself.
      const sendRows = [
        [1, 2],
        [3, 0],
      ];
      const comms = ranks.map((r) => new GrpcCommunicator(r.plane));
      const results = await Promise.all(
        comms.map(async (comm, r) => {
          const stream = device.stream();
          const rows = sendRows[r][0] + sendRows[r][1];
          const data = Float32Array.from({ length: rows * H }, (_, i) => r * 100 + Math.floor(i / H) * 10 + (i % H));
          const send = tensorFromFloat32(
            device,
            stream,
            'f32',
            [4, H],
            Float32Array.from({ length: 4 * H }, (_, i) => (i < data.length ? data[i] : -1)),
          );
          const recvRows = [sendRows[0][r], sendRows[1][r]];
          const recv = tensorFromFloat32(device, stream, 'f32', [5, H], new Float32Array(5 * H).fill(-7));
          await comm.allToAll(stream, send, sendRows[r], recv, recvRows);
          const out = await recv.readFloat32(stream);
          const gathered = await comm.allGather(Int32Array.from([r, r + 10]));
          return { out: Array.from(out), gathered: gathered.map((a) => Array.from(a)) };
        }),
      );
      const row = (r: number, i: number): number[] => [0, 1, 2].map((c) => r * 100 + i * 10 + c);
      const fill = (n: number): number[] => new Array<number>(n * H).fill(-7);
      // Rank 0 receives its own row 0, then rank 1's rows 0..2; rank 1 receives rank 0's rows 1..2.
      expect(results[0].out).toEqual([...row(0, 0), ...row(1, 0), ...row(1, 1), ...row(1, 2), ...fill(1)]);
      expect(results[1].out).toEqual([...row(0, 1), ...row(0, 2), ...fill(3)]);
      for (const r of results)
        expect(r.gathered).toEqual([
          [0, 10],
          [1, 11],
        ]);
    } finally {
      await stopRanks(ranks);
      device.dispose();
    }
  });
});
