// Issue 14, items 1 and 2, on real clusters on 127.0.0.1: limits before work (four concurrent 10 MiB
// requests refused by their size within a second, the cluster answering after them; bytes admitted
// before decoding); internal traffic authenticated (RankService and the rendezvous refuse calls
// without the cluster secret, UNAUTHENTICATED, and the cluster keeps answering; the secret is in no
// argv, environment or log; ranks of one node listen on loopback only); TLS on the public server,
// mutual TLS inside, and API keys on the public API (certificates made here with openssl).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PrefillClient } from '../src/cluster/prefillClient';
import { ByteBudget, tolerantPrefillService } from '../src/cluster/prefillService';
import { CLUSTER_SECRET_HEADER } from '../src/rpc/security';
import { coordinatorService, rankService } from '../src/rpc/protos';
import {
  FIXTURES,
  expectMatchesReference,
  goldenCases,
  isAlive,
  loadGolden,
  spawnLauncher,
  startCluster,
  withTimeout,
  type TestCluster,
} from './clusterHarness';
import { sendRaw } from './helpers/rawGrpc';

const FIXTURE = 'mixtral'; // no tokenizer.json: vocab 160, max positions 256
const MODEL = path.join(FIXTURES, FIXTURE);
const CASES = goldenCases(loadGolden(FIXTURE));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-moe-security-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writeFile(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}

/** Varint and length-delimited field, to build a PrefillRequest's bytes without encoding a huge object. */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}
function field(num: number, bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(num << 3) | 2, ...varint(bytes.length)]), bytes]);
}

/** A PrefillRequest of about `bytes` bytes: sequences of 200 ids (id 5, one byte each). */
function bigRequest(bytes: number): Buffer {
  const seq = field(1, field(1, Buffer.alloc(200, 5)));
  return Buffer.concat(new Array<Buffer>(Math.ceil(bytes / seq.length)).fill(seq));
}

/** The launcher's log fields of its first line with message `msg`. */
function logLine(logs: string, msg: string): Record<string, unknown> {
  const line = logs.split('\n').find((l) => l.includes(`"msg":"${msg}"`));
  if (!line) throw new Error(`no "${msg}" line in the logs`);
  return JSON.parse(line) as Record<string, unknown>;
}

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void;

/** Calls method `name` of an internal service at `address` with `metadata`; resolves with the status code. */
function callInternal(
  service: grpc.ServiceDefinition,
  address: string,
  name: string,
  req: object,
  metadata: grpc.Metadata,
  credentials = grpc.credentials.createInsecure(),
): Promise<number> {
  const Client = grpc.makeClientConstructor(service, 'S');
  // Ranks are reached by IP address: as the cluster's own internal channel does, send a name, not the address,
  // as the TLS server name (Node 26 refuses an IP address there).
  const client = new Client(address, credentials, { 'grpc.ssl_target_name_override': 'eps-moe.internal' }) as unknown as Record<
    string,
    Unary
  >;
  const def = service[name];
  const close = (): void => (client as unknown as grpc.Client).close();
  const deadline = Date.now() + 10_000;
  return new Promise<number>((resolve) => {
    if (def.responseStream) {
      const stream = (client[name] as unknown as (r: object, m: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown>)(
        req,
        metadata,
        { deadline },
      );
      stream.on('data', () => undefined);
      stream.on('error', (e: grpc.ServiceError) => resolve(e.code));
      stream.on('end', () => resolve(grpc.status.OK));
    } else if (def.requestStream) {
      const stream = (
        client[name] as unknown as (
          m: grpc.Metadata,
          o: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null) => void,
        ) => grpc.ClientWritableStream<unknown>
      )(metadata, { deadline }, (e) => resolve(e ? e.code : grpc.status.OK));
      stream.write(req);
      stream.end();
    } else {
      client[name](req, metadata, { deadline }, (e) => resolve(e ? e.code : grpc.status.OK));
    }
  }).finally(close);
}

function secretMetadata(secret: string | null): grpc.Metadata {
  const md = new grpc.Metadata();
  if (secret !== null) md.set(CLUSTER_SECRET_HEADER, secret);
  return md;
}

async function expectAnswers(client: PrefillClient): Promise<void> {
  const res = await client.prefill({ sequences: CASES.map((c) => ({ ids: c.ids })), topLogprobs: 3 }, { timeoutMs: 60_000 });
  res.sequences.forEach((got, i) => expectMatchesReference(got, CASES[i].logits, 3, CASES[i].ids.length));
}

describe('admission by bytes, before decoding (in process)', () => {
  test('a request that would take the bytes in flight past the budget is refused undecoded; bytes come back when released', () => {
    const budget = new ByteBudget(1000);
    const decode = tolerantPrefillService(budget).Prefill.requestDeserialize as (b: Buffer) => {
      kind: string;
      lease?: { release(): void };
    };
    const request = (n: number): Buffer => field(1, field(1, Buffer.alloc(n, 7)));
    const first = decode(request(600));
    expect(first.kind).toBe('request');
    expect(budget.inUse).toBe(606); // 600 ids + two tags and two 2-byte lengths
    expect(decode(request(600))).toEqual({ kind: 'overBudget', bytes: 606, limit: 1000 });
    // Garbage within the budget is taken (and later answered INVALID_ARGUMENT); garbage past it is not even read.
    expect(decode(Buffer.from([0xff, 0xff, 0xff])).kind).toBe('malformed');
    first.lease?.release();
    first.lease?.release(); // twice is once
    expect(budget.inUse).toBe(3);
    expect(decode(request(900)).kind).toBe('request');
    // A request alone always fits an empty budget (the receive limit bounds it); nothing fits beside it.
    const alone = new ByteBudget(10);
    expect(alone.take(50)).not.toBeNull();
    expect(alone.take(1)).toBeNull();
  });
});

describe('limits and authentication on a CPU cluster', () => {
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  test('4 concurrent 10 MiB requests are refused by size within 1 s in all; the cluster keeps answering', async () => {
    cluster = await startCluster({ model: MODEL, ranks: 2 });
    const c = cluster;
    // The limit, from the configured limits: 256 sequences per request x 256 tokens (max positions) x 10 bytes
    // per id (an int64 varint at most) + 16 per sequence, + 64 KiB.
    const limit = 256 * (256 * 10 + 16) + 65536;
    expect(logLine(c.logs(), 'router listening').maxRequestBytes).toBe(limit);
    await expectAnswers(c.client);

    const big = bigRequest(10 << 20);
    expect(big.length).toBeGreaterThanOrEqual(10 << 20);
    const t0 = Date.now();
    const errors = await Promise.all([0, 1, 2, 3].map(() => sendRaw(c.address, big, 20_000)));
    const elapsed = Date.now() - t0;
    for (const err of errors) {
      expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(err?.details).toMatch(new RegExp(`larger than max \\(\\d+ vs\\.? ${limit}\\)`));
    }
    expect(elapsed).toBeLessThan(1000);

    // Just over the limit is refused too; a valid request of the largest size the limits admit is answered
    // by admission (here: INVALID_ARGUMENT for its ids, so nothing is computed), not refused by size.
    expect((await sendRaw(c.address, bigRequest(limit + 2000), 20_000))?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const tooManyIds = field(1, field(1, Buffer.from(new Array(300).fill(0).flatMap(() => varint(1)))));
    expect((await sendRaw(c.address, tooManyIds, 20_000))?.details).toMatch(/^sequences\[0\]\.ids: 300 tokens; at most 256/);

    expect(await c.client.health('')).toBe('SERVING');
    await expectAnswers(c.client);
    expect([c.launcherPid, ...c.rankPids].every(isAlive)).toBe(true);
  });

  test('RankService and the rendezvous refuse calls without the cluster secret (UNAUTHENTICATED); the cluster keeps answering', async () => {
    const secret = randomBytes(32).toString('hex');
    const clusterSecretFile = writeFile('secret', `${secret}\n`);
    cluster = await startCluster({ model: MODEL, ranks: 2, clusterSecretFile });
    const c = cluster;
    const coordinator = String(logLine(c.logs(), 'router listening').coordinator);
    const peers = logLine(c.logs(), 'rank assigned').peers as string[];
    expect(peers).toHaveLength(2);
    // One node: the rendezvous and every rank listen on loopback only.
    for (const address of [coordinator, ...peers]) expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    if (external) {
      const port = Number(peers[0].split(':')[1]);
      const refused = await new Promise<boolean>((resolve) => {
        const sock = net.connect({ host: external, port }, () => {
          sock.destroy();
          resolve(false);
        });
        sock.on('error', () => resolve(true));
      });
      expect(refused).toBe(true);
    }

    const rank = rankService();
    const wrong = randomBytes(32).toString('hex');
    const calls: [grpc.ServiceDefinition, string, string, object][] = [
      [rank, peers[0], 'Shutdown', { reason: 'outsider', failed: false }],
      [rank, peers[1], 'Shutdown', { reason: 'outsider', failed: true }],
      [rank, peers[0], 'Step', { stepId: 1, sequences: [{ ids: [1, 2], topLogprobs: 1 }] }],
      [rank, peers[1], 'Step', { stepId: 99, sequences: [] }],
      [rank, peers[0], 'Load', { modelDir: '/' }],
      [rank, peers[0], 'Health', {}],
      [rank, peers[1], 'Exchange', { fromRank: 0, collective: 0, chunk: 0, chunks: 1, data: Buffer.alloc(0), clusterId: 'x' }],
      [coordinatorService(), coordinator, 'Join', { rank: 0, worldSize: 2, port: 1, backend: 'cpu' }],
    ];
    for (const [service, address, name, req] of calls) {
      for (const md of [secretMetadata(null), secretMetadata(wrong), secretMetadata(secret.slice(0, 32))]) {
        expect({ name, code: await callInternal(service, address, name, req, md) }).toEqual({ name, code: grpc.status.UNAUTHENTICATED });
      }
    }
    // The same call with the secret is served: it is the secret that was missing.
    expect(await callInternal(rank, peers[0], 'Health', {}, secretMetadata(secret))).toBe(grpc.status.OK);

    expect(await c.client.health('')).toBe('SERVING');
    await expectAnswers(c.client);
    expect([c.launcherPid, ...c.rankPids].every(isAlive)).toBe(true);
    // The secret reached the ranks on stdin only: in no process's argv or environment, in no log line.
    for (const pid of [c.launcherPid, ...c.rankPids]) {
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).not.toContain(secret);
      expect(fs.readFileSync(`/proc/${pid}/environ`, 'utf8')).not.toContain(secret);
    }
    expect(c.logs()).not.toContain(secret);
    expect(await c.stop('SIGINT')).toEqual({ code: 0, signal: null });
  });

  test('several nodes need --cluster-secret-file (exit 2); a short secret is refused', async () => {
    const noSecret = spawnLauncher({ model: MODEL, ranks: 1, nnodes: 2, nodeRank: 1, coordinator: '127.0.0.1:1' });
    expect((await withTimeout(noSecret.exited, 30_000, 'launcher did not exit')).code).toBe(2);
    expect(noSecret.stderr()).toMatch(/--cluster-secret-file is required when --nnodes > 1/);
    const short = spawnLauncher({ model: MODEL, ranks: 1, clusterSecretFile: writeFile('short', 'abc\n') });
    expect((await withTimeout(short.exited, 30_000, 'launcher did not exit')).code).toBe(2);
    expect(short.stderr()).toMatch(/the secret has 3 characters; at least 32/);
  });
});

const haveOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** A CA and one certificate it signs for 127.0.0.1 (the public server and every node use it). */
function makeCertificates(): { ca: string; cert: string; key: string } {
  const f = (n: string): string => path.join(tmp, n);
  const run = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
  run(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=eps-moe test CA',
  );
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('node.key'), '-out', f('node.csr'), '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  run(
    'x509',
    '-req',
    '-in',
    f('node.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-out',
    f('node.pem'),
    '-days',
    '2',
    '-extfile',
    f('ext.cnf'),
  );
  return { ca: f('ca.pem'), cert: f('node.pem'), key: f('node.key') };
}

(haveOpenssl ? describe : describe.skip)('TLS, mutual TLS inside, API keys (certificates from openssl)', () => {
  test('TLS clients with a key are answered; no key, a wrong key or plaintext are refused; ranks take only mutual TLS with the secret', async () => {
    const certs = makeCertificates();
    const key = randomBytes(24).toString('hex');
    const apiKeyFile = writeFile('keys', `# keys of the test\n\n${randomBytes(24).toString('hex')}\n${key}\n`);
    const secret = randomBytes(32).toString('hex');
    const clusterSecretFile = writeFile('secret-tls', secret);
    const ca = fs.readFileSync(certs.ca);
    const cluster = await startCluster(
      { model: MODEL, ranks: 2, tlsCert: certs.cert, tlsKey: certs.key, tlsCa: certs.ca, apiKeyFile, clusterSecretFile },
      {},
      90_000,
      { client: { apiKey: key, tlsRootCert: ca } },
    );
    const clients: PrefillClient[] = [];
    const client = (opts: ConstructorParameters<typeof PrefillClient>[1]): PrefillClient => {
      const made = new PrefillClient(cluster.address, opts);
      clients.push(made);
      return made;
    };
    try {
      expect(logLine(cluster.logs(), 'router listening')).toMatchObject({ publicTls: true, internalTls: true, apiKeys: 2 });
      // The cluster assembled, loaded and answers: the rendezvous, RankService and the data plane run over mutual TLS.
      await expectAnswers(cluster.client);
      const refused = async (c: PrefillClient): Promise<number | undefined> =>
        c.prefill({ sequences: [{ ids: [1, 2] }] }, { timeoutMs: 10_000 }).then(
          () => undefined,
          (e: grpc.ServiceError) => e.code,
        );
      expect(await refused(client({ tlsRootCert: ca }))).toBe(grpc.status.UNAUTHENTICATED);
      expect(await refused(client({ tlsRootCert: ca, apiKey: `${key}x` }))).toBe(grpc.status.UNAUTHENTICATED);
      expect(await refused(client({ apiKey: key }))).toBe(grpc.status.UNAVAILABLE); // plaintext to a TLS server
      // Health probes need no key.
      expect(await client({ tlsRootCert: ca }).health('')).toBe('SERVING');

      const peers = logLine(cluster.logs(), 'rank assigned').peers as string[];
      const nodeCert = fs.readFileSync(certs.cert);
      const nodeKey = fs.readFileSync(certs.key);
      const anyName = { checkServerIdentity: () => undefined };
      const rank = rankService();
      const health = (creds: grpc.ChannelCredentials, md: grpc.Metadata): Promise<number> =>
        callInternal(rank, peers[0], 'Health', {}, md, creds);
      // Plaintext, or TLS without a client certificate: no connection, even with the secret.
      expect(await health(grpc.credentials.createInsecure(), secretMetadata(secret))).toBe(grpc.status.UNAVAILABLE);
      expect(await health(grpc.credentials.createSsl(ca, null, null, anyName), secretMetadata(secret))).toBe(grpc.status.UNAVAILABLE);
      // Mutual TLS without the secret: refused; with it: served.
      const mutual = (): grpc.ChannelCredentials => grpc.credentials.createSsl(ca, nodeKey, nodeCert, anyName);
      expect(await health(mutual(), secretMetadata(null))).toBe(grpc.status.UNAUTHENTICATED);
      expect(await health(mutual(), secretMetadata(secret))).toBe(grpc.status.OK);

      await expectAnswers(cluster.client);
      expect(await cluster.stop('SIGINT')).toEqual({ code: 0, signal: null });
    } finally {
      for (const c of clients) c.close();
      await cluster.destroy();
    }
  });

  test('TLS options are checked before anything starts', async () => {
    const bad = spawnLauncher({ model: MODEL, tlsCert: path.join(tmp, 'missing.pem'), tlsKey: path.join(tmp, 'missing.key') });
    expect((await withTimeout(bad.exited, 30_000, 'launcher did not exit')).code).toBe(2);
    expect(bad.stderr()).toMatch(/--tls-cert .*missing\.pem: ENOENT/);
    const half = spawnLauncher({ model: MODEL, tlsCert: path.join(tmp, 'x.pem') });
    expect((await withTimeout(half.exited, 30_000, 'launcher did not exit')).code).toBe(2);
    expect(half.stderr()).toMatch(/give --tls-cert and --tls-key together/);
  });
});
