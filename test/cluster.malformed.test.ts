// Acceptance 3: a hundred malformed requests (empty, huge, wrong ids, garbage text, bytes that are
// not a message at all) each get INVALID_ARGUMENT naming the field, and the cluster still answers
// a good request after them. Acceptance 5: grpc.health.v1 and server reflection answer.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { PrefillRequestMsg } from '../src/rpc/protos';
import { FIXTURES, expectMatchesReference, goldenCases, loadGolden, startCluster, type TestCluster } from './clusterHarness';
import { sendRaw } from './helpers/rawGrpc';

const FIXTURE = 'qwen3-moe'; // has tokenizer.json; vocab 256, max positions 256
const VOCAB = 256;
const golden = loadGolden(FIXTURE);

/** A request as raw protobuf bytes: field 1 = TokenSequence (field 1 = packed int64 ids), 2 = text, 3 = top_logprobs. */
function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}
function lengthDelimited(field: number, bytes: number[]): number[] {
  return [(field << 3) | 2, ...varint(BigInt(bytes.length)), ...bytes];
}
function rawSequence(ids: bigint[]): number[] {
  return lengthDelimited(
    1,
    lengthDelimited(
      1,
      ids.flatMap((id) => varint(id)),
    ),
  );
}

type Malformed = { what: string; field: RegExp } & ({ request: Partial<PrefillRequestMsg> } | { raw: Buffer });

function malformedRequests(): Malformed[] {
  const fixed: Malformed[] = [
    { what: 'empty request', request: {}, field: /^sequences: / },
    { what: 'empty sequence', request: { sequences: [{ ids: [] }] }, field: /^sequences\[0\]\.ids: empty/ },
    { what: 'second sequence empty', request: { sequences: [{ ids: [1] }, { ids: [] }] }, field: /^sequences\[1\]\.ids: empty/ },
    {
      what: 'huge sequence',
      request: { sequences: [{ ids: new Array(200_000).fill(3) }] },
      field: /^sequences\[0\]\.ids: 200000 tokens; at most 256/,
    },
    { what: 'just too long', request: { sequences: [{ ids: new Array(257).fill(3) }] }, field: /^sequences\[0\]\.ids: 257 tokens/ },
    { what: 'too many sequences', request: { sequences: new Array(300).fill({ ids: [1] }) }, field: /^sequences: 300 entries/ },
    { what: 'id = vocab', request: { sequences: [{ ids: [1, VOCAB] }] }, field: /^sequences\[0\]\.ids\[1\]: id 256 is outside/ },
    { what: 'negative id', request: { sequences: [{ ids: [-5] }] }, field: /^sequences\[0\]\.ids\[0\]: id -5/ },
    { what: '2^40 id', request: { sequences: [{ ids: [2 ** 40] }] }, field: /^sequences\[0\]\.ids\[0\]: id 1099511627776/ },
    { what: 'top_logprobs too large', request: { sequences: [{ ids: [1] }], topLogprobs: 5000 }, field: /^top_logprobs: / },
    { what: 'texts and sequences', request: { sequences: [{ ids: [1] }], texts: ['a'] }, field: /^texts: / },
    { what: 'empty text', request: { texts: [''] }, field: /^texts\[0\]: empty text/ },
    { what: 'NUL text', request: { texts: ['\u0000\u0000'] }, field: /^texts\[0\]: not valid UTF-8/ },
    { what: 'replacement characters', request: { texts: ['ok', 'x\uFFFDy'] }, field: /^texts\[1\]: not valid UTF-8/ },
    { what: 'huge text', request: { texts: ['hello '.repeat(100_000)] }, field: /^texts\[0\]: / },
    { what: 'long request id', request: { sequences: [{ ids: [1] }], requestId: 'r'.repeat(1000) }, field: /^request_id: / },
    {
      what: 'invalid UTF-8 bytes in a text',
      raw: Buffer.from(lengthDelimited(2, [0x68, 0xff, 0xfe, 0x69])),
      field: /^texts\[0\]: not valid UTF-8/,
    },
    {
      what: 'bytes that are not protobuf',
      raw: Buffer.from('this is not a protobuf message \xff\xff\xff', 'latin1'),
      field: /^(request|sequences|texts)/,
    },
    {
      what: 'truncated message',
      raw: Buffer.from(rawSequence([1n, 2n, 3n]).slice(0, 4)),
      field: /^request: not an eps\.v1\.PrefillRequest/,
    },
    { what: 'id past 2^53 on the wire', raw: Buffer.from(rawSequence([(1n << 62n) + 1n])), field: /^sequences\[0\]\.ids\[0\]: / },
  ];
  // Then random variations, up to a hundred: random bytes, random out-of-vocabulary positions, random garbage texts.
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const out = [...fixed];
  while (out.length < 100) {
    const kind = out.length % 3;
    if (kind === 0) {
      const len = 1 + rand(60);
      const bad = rand(len);
      const ids = Array.from({ length: len }, (_, i) => (i === bad ? VOCAB + rand(1000) : rand(VOCAB)));
      out.push({
        what: `id out of vocabulary at ${bad}`,
        request: { sequences: [{ ids }] },
        field: new RegExp(`^sequences\\[0\\]\\.ids\\[${bad}\\]: id \\d+ is outside`),
      });
    } else if (kind === 1) {
      out.push({
        what: 'random bytes',
        raw: Buffer.from(Array.from({ length: 1 + rand(64) }, () => rand(256))),
        field: /^(request|sequences|texts|top_logprobs|request_id)/,
      });
    } else {
      const garbage = String.fromCharCode(...Array.from({ length: 1 + rand(20) }, () => (rand(2) ? 0 : 0xfffd)));
      out.push({ what: 'garbage text', request: { texts: ['fine', garbage] }, field: /^texts\[1\]: not valid UTF-8/ });
    }
  }
  return out;
}

describe(`malformed requests, health and reflection (${FIXTURE}, 2 ranks)`, () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, FIXTURE), ranks: 2 });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('a hundred malformed requests each get INVALID_ARGUMENT naming the field; then a good one is answered', async () => {
    const bad = malformedRequests();
    expect(bad).toHaveLength(100);
    for (const m of bad) {
      let err: grpc.ServiceError | null;
      if ('raw' in m) err = await sendRaw(cluster.address, m.raw);
      else
        err = await cluster.client.prefill(m.request, { timeoutMs: 10_000 }).then(
          () => null,
          (e: grpc.ServiceError) => e,
        );
      expect({ what: m.what, code: err?.code }).toEqual({ what: m.what, code: grpc.status.INVALID_ARGUMENT });
      expect(err?.details).toMatch(m.field);
    }
    const [, good] = goldenCases(golden);
    const res = await cluster.client.prefill({ sequences: [{ ids: good.ids }], topLogprobs: 5 }, { timeoutMs: 30_000 });
    expectMatchesReference(res.sequences[0], good.logits, 5, good.ids.length);
  });

  test('grpc.health.v1: SERVING for the server and for eps.v1.PrefillService; NOT_FOUND for others', async () => {
    expect(await cluster.client.health('')).toBe('SERVING');
    expect(await cluster.client.health('eps.v1.PrefillService')).toBe('SERVING');
    await expect(cluster.client.health('no.such.Service')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  test('server reflection lists the services and describes eps.v1.PrefillService', async () => {
    const reflectionProto = require.resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');
    const pkg = protoLoader.loadSync(reflectionProto, { keepCase: true, defaults: true, oneofs: true });
    const Reflection = grpc.makeClientConstructor(pkg['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition, 'ServerReflection');
    const client = new Reflection(cluster.address, grpc.credentials.createInsecure()) as unknown as {
      ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse>;
      close(): void;
    };
    interface ReflectionResponse {
      list_services_response?: { service: { name: string }[] };
      file_descriptor_response?: { file_descriptor_proto: Buffer[] };
    }
    const ask = (req: object): Promise<ReflectionResponse> =>
      new Promise((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on('data', (res: ReflectionResponse) => {
          resolve(res);
          call.end();
        });
        call.on('error', reject);
        call.write(req);
      });
    try {
      const list = await ask({ list_services: '' });
      const names = list.list_services_response?.service.map((s) => s.name) ?? [];
      expect(names).toEqual(expect.arrayContaining(['eps.v1.PrefillService', 'grpc.health.v1.Health']));
      expect(names).not.toContain('eps.v1.RankService');

      const files = await ask({ file_containing_symbol: 'eps.v1.PrefillService' });
      // Decode the FileDescriptorProto with protobufjs' descriptor and find the service and its methods.
      const descriptor = require('protobufjs/ext/descriptor') as { FileDescriptorProto: { decode(b: Buffer): FileDescriptor } };
      interface FileDescriptor {
        package: string;
        service: { name: string; method: { name: string }[] }[];
      }
      const decoded = (files.file_descriptor_response?.file_descriptor_proto ?? []).map((b) => descriptor.FileDescriptorProto.decode(b));
      const svc = decoded.flatMap((f) => f.service.map((s) => ({ pkg: f.package, ...s }))).find((s) => s.name === 'PrefillService');
      expect(svc?.pkg).toBe('eps.v1');
      expect(svc?.method.map((m) => m.name).sort()).toEqual(['GetMetrics', 'GetModelInfo', 'Prefill']);
    } finally {
      client.close();
    }
  });
});
