// A small seeded generator for make-model: xoshiro128** (Blackman & Vigna) seeded through
// splitmix32, one stream per (seed, key), so every tensor piece has its own reproducible values no
// matter in which order or layout the pieces are written. Same seed and key => same numbers on
// every platform (only 32-bit integer ops and exact float arithmetic).

// A module-level binding: in a vm context (jest runs tests in one) every global lookup such as
// `Math.imul` goes through an interceptor and costs ~100x; a local reference does not.
const imul = Math.imul;

/** splitmix32 step: returns [next state, output]. */
function splitmix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = imul(z ^ (z >>> 16), 0x85ebca6b);
  z = imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [s, (z ^ (z >>> 16)) >>> 0];
}

/** FNV-1a over the UTF-16 code units of a key. */
function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Xoshiro128 {
  private readonly s = new Uint32Array(4);

  /** A stream for (seed, key); seed is any safe integer. */
  constructor(seed: number, key = '') {
    let state = (hashKey(key) ^ imul(seed >>> 0, 0x9e3779b1) ^ Math.floor(seed / 2 ** 32)) | 0;
    for (let i = 0; i < 4; i++) {
      let out: number;
      [state, out] = splitmix32(state);
      this.s[i] = out;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1; // the all-zero state is a fixed point
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const x = imul(s[1], 5);
    const result = imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return result;
  }

  /**
   * Fills `out` with mean-0, standard-deviation-`std` values, roughly normal: the sum of four
   * 16-bit uniforms (Irwin-Hall, n = 4), centred and scaled. Tails end at 3.46 std, which keeps
   * random weights free of outliers.
   */
  fillNormalish(out: Float32Array, std: number, offset = 0, count = out.length - offset): void {
    // Each uniform is (k + 0.5) / 65536, k in [0, 65535]; sum of 4 has mean 2, variance 4/12.
    const scale = (std * Math.sqrt(3)) / 65536;
    // nextUint32 inlined over locals: this loop makes every weight of a 90 GB checkpoint.
    let s0 = this.s[0] | 0;
    let s1 = this.s[1] | 0;
    let s2 = this.s[2] | 0;
    let s3 = this.s[3] | 0;
    const end = offset + count;
    for (let i = offset; i < end; i++) {
      let x = imul(s1, 5);
      const a = imul((x << 7) | (x >>> 25), 9);
      let t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      x = imul(s1, 5);
      const b = imul((x << 7) | (x >>> 25), 9);
      t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      const sum = (a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16) + 2 - 131072;
      out[i] = sum * scale;
    }
    this.s[0] = s0;
    this.s[1] = s1;
    this.s[2] = s2;
    this.s[3] = s3;
  }
}
