// Expert placement and the virtual order of expert groups (src/moe/placement.ts), against tables
// worked out by hand.
import { ExpertLayout, ExpertLayoutError, expertLayout, expertRanges } from '../src/moe/placement';

test('ranks hold contiguous experts, the first E % W one more', () => {
  expect(expertRanges(8, 3)).toEqual([
    { first: 0, count: 3 },
    { first: 3, count: 3 },
    { first: 6, count: 2 },
  ]);
  expect(expertRanges(2, 4).map((r) => r.count)).toEqual([1, 1, 0, 0]);
});

describe('ExpertLayout', () => {
  test('one group: the virtual order is the checkpoint order', () => {
    const l = expertLayout(8, 2);
    expect(l.identity).toBe(true);
    expect(Array.from({ length: 8 }, (_, v) => l.globalOf(v))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(l.virtualRange(1, 0)).toEqual({ first: 4, count: 4 });
    expect(l.localGroup(1, 0)).toEqual({ first: 0, count: 4 });
  });

  test('8 experts, 3 ranks, 2 groups: uneven groups, group-major then rank-major', () => {
    // Ranks hold 0-2, 3-5, 6-7. Groups of local experts: ranks 0, 1: [2, 1]; rank 2: [1, 1].
    // Virtual order: group 0 = 0 1 | 3 4 | 6, group 1 = 2 | 5 | 7.
    const l = expertLayout(8, 3, 2);
    expect(l.identity).toBe(false);
    expect(Array.from({ length: 8 }, (_, v) => l.globalOf(v))).toEqual([0, 1, 3, 4, 6, 2, 5, 7]);
    expect(Array.from({ length: 8 }, (_, e) => l.virtualOf(e))).toEqual([0, 1, 5, 2, 3, 6, 4, 7]);
    expect(Array.from({ length: 8 }, (_, v) => l.rankOf(v))).toEqual([0, 0, 1, 1, 2, 0, 1, 2]);
    expect(Array.from({ length: 8 }, (_, v) => l.groupOf(v))).toEqual([0, 0, 0, 0, 0, 1, 1, 1]);
    expect([0, 1, 2].map((p) => [l.localGroup(p, 0), l.localGroup(p, 1)])).toEqual([
      [
        { first: 0, count: 2 },
        { first: 2, count: 1 },
      ],
      [
        { first: 0, count: 2 },
        { first: 2, count: 1 },
      ],
      [
        { first: 0, count: 1 },
        { first: 1, count: 1 },
      ],
    ]);
    expect([0, 1, 2].map((p) => l.virtualRange(p, 1))).toEqual([
      { first: 5, count: 1 },
      { first: 6, count: 1 },
      { first: 7, count: 1 },
    ]);
    expect([l.groupRange(0), l.groupRange(1)]).toEqual([
      { first: 0, count: 5 },
      { first: 5, count: 3 },
    ]);
    // Rows per rank from counts per virtual expert: group 0, group 1, both.
    const counts = [1, 2, 3, 4, 5, 10, 20, 30];
    expect(l.rowsPerRank(counts, 0, 1)).toEqual([3, 7, 5]);
    expect(l.rowsPerRank(counts, 1, 2)).toEqual([10, 20, 30]);
    expect(l.rowsPerRank(counts)).toEqual([13, 27, 35]);
  });

  test('a rank with fewer experts than groups has empty groups', () => {
    // 3 groups: ranks 0, 1 hold 3 experts (one each), rank 2 holds 2 (its group 2 is empty).
    const l = expertLayout(8, 3, 3);
    expect(l.localGroup(2, 2)).toEqual({ first: 2, count: 0 });
    expect(l.virtualRange(2, 2)).toEqual({ first: 8, count: 0 });
    expect(Array.from({ length: 8 }, (_, v) => l.globalOf(v))).toEqual([0, 3, 6, 1, 4, 7, 2, 5]);
  });

  test('ranks without experts take no virtual ids', () => {
    const l = expertLayout(2, 4, 1);
    expect([0, 1, 2, 3].map((p) => l.virtualRange(p, 0).count)).toEqual([1, 1, 0, 0]);
  });

  test.each([
    [8, 2, 0, /from 1 to 4 .* got 0/],
    [8, 2, 5, /from 1 to 4 .* got 5/],
    [8, 3, 1.5, /got 1.5/],
    [4, 4, 2, /from 1 to 1 .* got 2/],
  ])('%i experts on %i ranks refuse %d groups', (E, W, G, message) => {
    expect(() => expertLayout(E, W, G)).toThrow(ExpertLayoutError);
    expect(() => expertLayout(E, W, G)).toThrow(message);
  });

  test('ranges must continue one another', () => {
    expect(
      () =>
        new ExpertLayout([
          { first: 0, count: 2 },
          { first: 3, count: 2 },
        ]),
    ).toThrow(/ranges\[1\] = \{first: 3, count: 2\} does not continue from expert 2/);
  });
});
