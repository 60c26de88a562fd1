// Small pure pieces of the cluster: addresses, the load generator's statistics, the ranks'
// configuration as they receive it.
import { nearestRank, summarizeLoad } from '../src/cluster/loadStats';
import { DEFAULT_ENGINE_CONFIG, parseRankConfig, type EngineConfig } from '../src/cluster/rankConfig';
import { parseMoeSchedule } from '../src/moe/schedule';
import { parseHostPort, peerHost } from '../src/cluster/peerAddress';

describe('peerHost', () => {
  test.each([
    ['127.0.0.1:5000', '127.0.0.1'],
    ['10.1.2.3:443', '10.1.2.3'],
    ['::ffff:10.0.0.2:5000', '10.0.0.2'],
    ['::1:5000', '[::1]'],
    ['[fe80::1]:5000', '[fe80::1]'],
  ])('%s -> %s', (peer, host) => expect(peerHost(peer)).toBe(host));
});

describe('parseHostPort', () => {
  test('host:port and [v6]:port', () => {
    expect(parseHostPort('node0:29500', 'x')).toEqual({ host: 'node0', port: 29500 });
    expect(parseHostPort('[::1]:1', 'x')).toEqual({ host: '[::1]', port: 1 });
  });
  test.each(['node0', 'node0:', ':5', 'a:70000', 'a:0', 'a:b'])('refuses %s', (text) => {
    expect(() => parseHostPort(text, '--coordinator')).toThrow(/^--coordinator: expected HOST:PORT/);
  });
});

describe('load statistics', () => {
  test('nearest-rank percentiles of 1..10', () => {
    const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(nearestRank(xs, 0.5)).toBe(5);
    expect(nearestRank(xs, 0.9)).toBe(9);
    expect(nearestRank(xs, 0.99)).toBe(10);
    expect(nearestRank([], 0.5)).toBeNaN();
  });

  test('throughput from successes only; failures counted by status', () => {
    const s = summarizeLoad([40, 10, 30, 20], 400, { UNAVAILABLE: 1 }, 2000);
    expect(s).toMatchObject({ requests: 5, ok: 4, requestsPerSecond: 2, tokensPerSecond: 200, errors: { UNAVAILABLE: 1 } });
    expect(s.latencyMs).toEqual({ p50: 20, p90: 40, p99: 40, max: 40, mean: 25 });
  });
});

describe('parseRankConfig (what the launcher sends each rank on stdin)', () => {
  const config = (engine: Partial<Record<keyof EngineConfig, unknown>> = {}): string =>
    JSON.stringify({
      coordinator: '127.0.0.1:5000',
      rank: 1,
      world: 2,
      nodeRank: 0,
      localRank: 1,
      backend: 'cpu',
      deviceIndex: 0,
      bindHost: '127.0.0.1',
      advertiseHost: '',
      collectiveTimeoutMs: 1000,
      rendezvousTimeoutMs: 1000,
      parentCheckMs: 0,
      clusterSecret: 'ab'.repeat(32),
      tls: null,
      maxReceiveBytes: 1 << 20,
      engine: { ...DEFAULT_ENGINE_CONFIG, ...engine },
    });

  test('a RankConfig comes back as sent; the schedule as parseMoeSchedule makes it', () => {
    const sent = config({ schedule: parseMoeSchedule('fixed:4:dense:experts'), expertGroups: 4, dispatch: 'dedup', randomWeightsSeed: 0 });
    expect(parseRankConfig(sent)).toEqual(JSON.parse(sent));
    expect(parseRankConfig(config()).engine).toEqual({
      schedule: { kind: 'auto' },
      expertGroups: 1,
      dispatch: 'auto',
      randomWeightsSeed: null,
      traceFile: null,
      checkWeights: false,
      checkLayers: false,
    });
  });
  test.each([0, -2, 2.5, 'four', '4'])('refuses expert groups %j', (groups) => {
    expect(() => parseRankConfig(config({ expertGroups: groups }))).toThrow(/engine.expertGroups must be a positive integer/);
  });
  test('refuses a dispatch mode it does not know, naming the field and the modes', () => {
    expect(() => parseRankConfig(config({ dispatch: '1' }))).toThrow(/engine.dispatch must be one of auto, pairs, dedup, got "1"/);
  });
  test.each([
    { kind: 'sometimes' },
    { kind: 'fixed', degree: '2' },
    { kind: 'fixed', degree: 2, kernel: 'DENSE' },
    { kind: 'auto', degree: 2 },
    'auto',
  ])('refuses the schedule %j', (schedule) => {
    expect(() => parseRankConfig(config({ schedule }))).toThrow(/engine.schedule/);
  });
  test('refuses what is not JSON, and a rank outside the world', () => {
    expect(() => parseRankConfig('{')).toThrow(/rank configuration: not JSON/);
    expect(() => parseRankConfig(config().replace('"rank":1', '"rank":2'))).toThrow(/rank 2 is outside \[0, 2\)/);
  });
  test('refuses a short or missing cluster secret without echoing it, and TLS without its CA', () => {
    const short = config().replace('ab'.repeat(32), 'tooshort');
    expect(() => parseRankConfig(short)).toThrow(/clusterSecret must be a string of at least 32 characters$/);
    expect(() => parseRankConfig(config().replace(`"clusterSecret":"${'ab'.repeat(32)}",`, ''))).toThrow(/clusterSecret/);
    expect(() => parseRankConfig(config().replace('"tls":null', '"tls":{"cert":"c.pem","key":"k.pem"}'))).toThrow(
      /tls.ca must be a string/,
    );
    expect(parseRankConfig(config().replace('"tls":null', '"tls":{"cert":"c.pem","key":"k.pem","ca":"ca.pem"}')).tls).toEqual({
      cert: 'c.pem',
      key: 'k.pem',
      ca: 'ca.pem',
    });
  });
});
