// NCCL on the CUDA backend. With one GPU: the TypeScript NcclCommunicator over a one-rank
// communicator (self copy, all-gather). With two or more: two processes, one per GPU, exchange rows
// by all-to-all with uneven and zero counts, and every received byte is checked against the pattern
// its sender wrote; then an all-gather of small host arrays.
//
// Skipped, saying why, where the addon has no CUDA backend or (the two-process part) fewer than two
// GPUs are visible.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addon, hasBackend } from '../src/native/addon';
import { Device } from '../src/native/device';
import { NcclCommunicator, hasNccl, ncclUniqueId } from '../src/comm/ncclCommunicator';

function gpuCount(): number {
  try {
    return hasBackend('cuda') && hasNccl() ? addon().devices('cuda').length : 0;
  } catch {
    return 0;
  }
}

const gpus = gpuCount();
const describeOneGpu = gpus >= 1 ? describe : describe.skip;
const describeTwoGpus = gpus >= 2 ? describe : describe.skip;
if (gpus < 2) {
  console.log(
    gpus === 0
      ? 'gpu.nccl: skipped: the addon has no CUDA backend with NCCL here'
      : 'gpu.nccl: two-process all-to-all skipped: one GPU visible (it needs two)',
  );
}

describeOneGpu('NcclCommunicator, one rank', () => {
  test('all-to-all to itself copies the rows; all-gather returns the local array', async () => {
    const device = Device.open('cuda', 0);
    const comm = NcclCommunicator.join(device, ncclUniqueId(), 1, 0);
    const s = device.stream();
    const send = device.tensor('i32', [5, 3]);
    const recv = device.tensor('i32', [6, 3]);
    send.upload(
      s,
      Int32Array.from({ length: 15 }, (_, i) => i * 7 - 3),
    );
    recv.upload(s, new Int32Array(18).fill(-1));
    await comm.allToAll(s, send, [4], recv, [4]);
    const got = Array.from(await recv.read(s));
    expect(got).toEqual([...Array.from({ length: 12 }, (_, i) => i * 7 - 3), -1, -1, -1, -1, -1, -1]);
    const gathered = await comm.allGather(Int32Array.from([5, -6, 7]));
    expect(gathered.map((a) => Array.from(a))).toEqual([[5, -6, 7]]);
    await comm.close();
    await expect(comm.allGather(Int32Array.from([1]))).rejects.toThrow(/closed/);
    for (const o of [send, recv, s]) o.dispose();
  });
});

// One rank's program, run by `node -e` in its own process: plain JavaScript over the addon.
const RANK_PROGRAM = String.raw`
const a = require(process.env.EPS_ADDON);
const rank = Number(process.env.RANK), world = Number(process.env.WORLD);
const counts = JSON.parse(process.env.COUNTS);       // counts[round][src][dst] rows
const H = 37;                                       // bf16 rows of 74 bytes
const rowBytes = H * 2;
const pattern = (src, dst, row, b) => (src * 131 + dst * 31 + row * 7 + b * 3 + 1) & 0xff;
(async () => {
  const dev = a.openDevice('cuda', rank);
  const id = Uint8Array.from(Buffer.from(process.env.NCCL_ID, 'hex'));
  const comm = new a.NcclComm(dev, id, world, rank);
  const s = dev.createStream();
  const report = { rank, rounds: [] };
  for (const table of counts) {
    const sendRows = table[rank];
    const recvRows = table.map((row) => row[rank]);
    const nSend = sendRows.reduce((x, y) => x + y, 0), nRecv = recvRows.reduce((x, y) => x + y, 0);
    const send = dev.alloc('bf16', [Math.max(nSend, 1), H]);
    const recv = dev.alloc('bf16', [nRecv + 2, H]);   // two spare rows that must stay untouched
    const out = new Uint8Array(send.byteLength);
    let r0 = 0;
    for (let p = 0; p < world; p++) {
      for (let r = 0; r < sendRows[p]; r++)
        for (let b = 0; b < rowBytes; b++) out[(r0 + r) * rowBytes + b] = pattern(rank, p, r, b);
      r0 += sendRows[p];
    }
    send.upload(s, out);
    recv.upload(s, new Uint8Array(recv.byteLength).fill(0xee));
    comm.allToAll(s, send, sendRows, recv, recvRows);
    const got = new Uint8Array(await recv.download(s));
    let bad = 0, row = 0;
    for (let p = 0; p < world; p++) {
      for (let r = 0; r < recvRows[p]; r++, row++)
        for (let b = 0; b < rowBytes; b++) if (got[row * rowBytes + b] !== pattern(p, rank, r, b)) bad++;
    }
    for (let i = nRecv * rowBytes; i < got.length; i++) if (got[i] !== 0xee) bad++;
    report.rounds.push({ sendRows, recvRows, bytes: nRecv * rowBytes, bad });
    send.dispose();
    recv.dispose();
  }
  const gathered = new Int32Array(await comm.allGather(Int32Array.from([rank * 10 + 1, rank * 10 + 2, -rank])));
  report.gathered = Array.from(gathered);
  comm.dispose();
  process.stdout.write(JSON.stringify(report) + '\n');
})().catch((e) => {
  process.stdout.write(JSON.stringify({ rank, error: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
`;

interface RankReport {
  rank: number;
  error?: string;
  rounds?: { sendRows: number[]; recvRows: number[]; bytes: number; bad: number }[];
  gathered?: number[];
}

function addonPath(): string {
  const candidates = [process.env.EPS_NATIVE, path.resolve(__dirname, '..', 'build', 'Release', 'eps_native.node')];
  const found = candidates.find((p) => p && fs.existsSync(p));
  if (!found) throw new Error('the addon was not found');
  return found;
}

function runRank(rank: number, world: number, id: Uint8Array, counts: number[][][]): Promise<RankReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', RANK_PROGRAM], {
      env: {
        ...process.env,
        EPS_ADDON: addonPath(),
        RANK: String(rank),
        WORLD: String(world),
        NCCL_ID: Buffer.from(id).toString('hex'),
        COUNTS: JSON.stringify(counts),
        NCCL_NVLS_ENABLE: '0', // never NVLink multicast on shared hosts
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 90_000,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as RankReport);
      } catch {
        reject(new Error(`rank ${rank} exited with ${code ?? signal} and no report; stderr:\n${err.slice(-2000)}`));
      }
    });
  });
}

describeTwoGpus('NCCL all-to-all between two processes on two GPUs', () => {
  test('uneven and zero counts arrive byte for byte; all-gather in rank order', async () => {
    // counts[round][src][dst]: rows src sends to dst.
    const counts = [
      [
        [3, 5],
        [0, 2],
      ], // rank 1 sends rank 0 nothing
      [
        [0, 0],
        [0, 0],
      ], // nobody sends anything: every rank still takes part
      [
        [1000, 1],
        [77, 0],
      ], // uneven; rank 1 keeps nothing for itself
      [
        [0, 4096],
        [1, 3],
      ],
    ];
    const id = ncclUniqueId();
    const reports = await Promise.all([0, 1].map((r) => runRank(r, 2, id, counts)));
    for (const rep of reports) {
      expect(rep.error).toBeUndefined();
      expect(rep.rounds).toHaveLength(counts.length);
      for (const [i, round] of (rep.rounds ?? []).entries()) {
        expect(round.recvRows).toEqual(counts[i].map((row) => row[rep.rank]));
        expect(round.bad).toBe(0);
      }
      expect(rep.gathered).toEqual([1, 2, 0, 11, 12, -1]);
    }
    console.log(
      'NCCL all-to-all, bytes received per rank and round: ' + JSON.stringify(reports.map((r) => (r.rounds ?? []).map((x) => x.bytes))),
    );
  });
});
