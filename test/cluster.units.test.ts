// Small pure pieces of the cluster: addresses, the load generator's statistics, the ranks' settings
// from the environment.
import { nearestRank, summarizeLoad } from '../src/cluster/loadStats';
import { dispatchFromEnv, expertGroupsFromEnv } from '../src/cluster/rankEngineFactory';
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

describe('expertGroupsFromEnv (launch --expert-groups G)', () => {
  test('unset or empty: one group; digits: that many', () => {
    expect(expertGroupsFromEnv({})).toBeUndefined();
    expect(expertGroupsFromEnv({ EPS_EXPERT_GROUPS: '' })).toBeUndefined();
    expect(expertGroupsFromEnv({ EPS_EXPERT_GROUPS: '4' })).toBe(4);
  });
  test.each(['0', '-2', '2.5', 'four', '0x4'])('refuses %j', (text) => {
    expect(() => expertGroupsFromEnv({ EPS_EXPERT_GROUPS: text })).toThrow(/EPS_EXPERT_GROUPS must be a positive integer/);
  });
});

describe('dispatchFromEnv (launch --dispatch MODE)', () => {
  test('unset or empty: auto; a mode, in any case', () => {
    expect(dispatchFromEnv({})).toBeUndefined();
    expect(dispatchFromEnv({ EPS_DISPATCH: ' ' })).toBeUndefined();
    expect(dispatchFromEnv({ EPS_DISPATCH: 'dedup' })).toBe('dedup');
    expect(dispatchFromEnv({ EPS_DISPATCH: 'PAIRS' })).toBe('pairs');
  });
  test('refuses anything else, naming the variable and the modes', () => {
    expect(() => dispatchFromEnv({ EPS_DISPATCH: '1' })).toThrow(/EPS_DISPATCH must be one of auto, pairs, dedup, got "1"/);
  });
});
