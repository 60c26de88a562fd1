// The dispatcher seam's guard: a combine takes only a handle its own dispatcher made, once.
import { checkHandle } from '../src/moe/exec/dispatcher';

describe('checkHandle', () => {
  const owner = {};
  test('accepts its own handle once', () => {
    const handle = { owner, combined: false, chunk: 2 };
    expect(() => checkHandle(handle, owner)).not.toThrow();
    expect(handle.combined).toBe(true);
    expect(() => checkHandle(handle, owner)).toThrow('combine: chunk 2 was combined already');
  });
  test("refuses another dispatcher's handle", () => {
    const handle = { owner: {}, combined: false, chunk: 0 };
    expect(() => checkHandle(handle, owner)).toThrow('combine: the handle of chunk 0 comes from another dispatcher');
    expect(handle.combined).toBe(false);
  });
});
