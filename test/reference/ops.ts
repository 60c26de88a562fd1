// Plain float64 references of the ops in native/ops.md: the most direct loops that follow the
// contract's words, for the CPU kernels to be compared against.
type Vec = ArrayLike<number>;

/** out[M,N] = a[M,K] @ w[N,K]^T (+ bias[N]). */
export function matmulRef(a: Vec, w: Vec, M: number, N: number, K: number, bias?: Vec): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += a[m * K + k] * w[n * K + k];
      out[m * N + n] = s;
    }
  return out;
}

/** Segment s of `counts` rows uses expert s % E of w[E,N,K]. */
export function expertMatmulRef(a: Vec, w: Vec, counts: readonly number[], E: number, N: number, K: number): Float64Array {
  const R = counts.reduce((x, y) => x + y, 0);
  const out = new Float64Array(R * N);
  let row = 0;
  counts.forEach((count, s) => {
    const e = s % E;
    for (let r = row; r < row + count; r++)
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += a[r * K + k] * w[(e * N + n) * K + k];
        out[r * N + n] = acc;
      }
    row += count;
  });
  return out;
}

/** Causal attention within each packed sequence; query head h reads kv head h / (nq / nkv). */
export function attentionRef(
  q: Vec,
  k: Vec,
  v: Vec,
  cu: readonly number[],
  nq: number,
  nkv: number,
  hd: number,
  scale: number,
  hdv = hd,
): Float64Array {
  const T = cu[cu.length - 1];
  const out = new Float64Array(T * nq * hdv);
  for (let b = 0; b + 1 < cu.length; b++) {
    for (let t = cu[b]; t < cu[b + 1]; t++) {
      for (let h = 0; h < nq; h++) {
        const kvh = Math.floor(h / (nq / nkv));
        const scores: number[] = [];
        for (let j = cu[b]; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[(t * nq + h) * hd + d] * k[(j * nkv + kvh) * hd + d];
          scores.push(dot * scale);
        }
        const max = Math.max(...scores);
        const p = scores.map((x) => Math.exp(x - max));
        const sum = p.reduce((x, y) => x + y, 0);
        for (let d = 0; d < hdv; d++) {
          let acc = 0;
          for (let j = cu[b]; j <= t; j++) acc += p[j - cu[b]] * v[(j * nkv + kvh) * hdv + d];
          out[(t * nq + h) * hdv + d] = acc / sum;
        }
      }
    }
  }
  return out;
}

/**
 * GPT-NeoX rotate-half over the first 2*len(invFreq) dims of each head. The angle is the fp32
 * product pos * invFreq[i], as transformers computes it (in float64 it would differ by up to
 * pos * 2^-24 radians, far above the test bound for large positions); the rest is float64.
 */
export function ropeRef(
  x: Vec,
  positions: readonly number[],
  invFreq: Vec,
  T: number,
  nh: number,
  hd: number,
  scaling: number,
): Float64Array {
  const out = Float64Array.from(x);
  const half = invFreq.length;
  for (let t = 0; t < T; t++)
    for (let h = 0; h < nh; h++)
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(positions[t] * invFreq[i]);
        const c = Math.cos(angle) * scaling;
        const n = Math.sin(angle) * scaling;
        const base = (t * nh + h) * hd;
        const x1 = x[base + i];
        const x2 = x[base + i + half];
        out[base + i] = x1 * c - x2 * n;
        out[base + i + half] = x2 * c + x1 * n;
      }
  return out;
}

/** Rows of H: x / sqrt(mean(x^2) + eps) * w. */
export function rmsnormRef(x: Vec, w: Vec, eps: number): Float64Array {
  const H = w.length;
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / H; r++) {
    let ss = 0;
    for (let h = 0; h < H; h++) ss += x[r * H + h] ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let h = 0; h < H; h++) out[r * H + h] = x[r * H + h] * inv * w[h];
  }
  return out;
}

export function swigluRef(gateUp: Vec, T: number, I: number): Float64Array {
  const out = new Float64Array(T * I);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < I; i++) {
      const g = gateUp[t * 2 * I + i];
      out[t * I + i] = (g / (1 + Math.exp(-g))) * gateUp[t * 2 * I + I + i];
    }
  return out;
}

/** Softmax, the k largest (ties: lower index first), optional renormalisation, scale. */
export function routerRef(
  logits: Vec,
  T: number,
  E: number,
  k: number,
  renormalize: boolean,
  scale: number,
): { idx: number[]; w: number[] } {
  const idx: number[] = [];
  const w: number[] = [];
  for (let t = 0; t < T; t++) {
    const row = Array.from({ length: E }, (_, e) => logits[t * E + e]);
    const max = Math.max(...row);
    const ex = row.map((x) => Math.exp(x - max));
    const sum = ex.reduce((x, y) => x + y, 0);
    const p = ex.map((x) => x / sum);
    const order = p.map((_, e) => e).sort((a, b) => p[b] - p[a] || a - b);
    const top = order.slice(0, k);
    const picked = top.reduce((acc, e) => acc + p[e], 0);
    for (const e of top) {
      idx.push(e);
      w.push((renormalize ? p[e] / picked : p[e]) * scale);
    }
  }
  return { idx, w };
}

/**
 * DeepSeek's routers in float64, written from transformers 5.17's DeepseekV2TopkRouter / DeepseekV3TopkRouter:
 * scores (softmax or sigmoid), choice = scores + bias, groups kept by their max (group_limited_greedy) or
 * the sum of their two best (noaux_tc), the k best choices among the kept groups' experts, weights the
 * unbiased scores (renormalised: / (sum + 1e-20) for sigmoid), times scale. groupOf[e]: expert e's group.
 */
export function groupRouterRef(
  logits: Vec,
  T: number,
  E: number,
  k: number,
  o: {
    renormalize: boolean;
    scale: number;
    scoring: 'softmax' | 'sigmoid';
    method: 'greedy' | 'group_limited_greedy' | 'noaux_tc';
    groups: number;
    topkGroup: number;
    bias?: Vec;
    groupOf?: readonly number[];
  },
): { idx: number[]; w: number[] } {
  const idx: number[] = [];
  const w: number[] = [];
  const groupOf = o.groupOf ?? Array.from({ length: E }, (_, e) => Math.floor(e / (E / o.groups)));
  for (let t = 0; t < T; t++) {
    const row = Array.from({ length: E }, (_, e) => logits[t * E + e]);
    let s: number[];
    if (o.scoring === 'sigmoid') s = row.map((x) => 1 / (1 + Math.exp(-x)));
    else {
      const max = Math.max(...row);
      const ex = row.map((x) => Math.exp(x - max));
      const sum = ex.reduce((a, b) => a + b, 0);
      s = ex.map((x) => x / sum);
    }
    const c = s.map((x, e) => x + (o.bias ? o.bias[e] : 0));
    let allowed = new Array<boolean>(E).fill(true);
    if (o.method !== 'greedy') {
      const gscore = Array.from({ length: o.groups }, (_, g) => {
        const mine = c.filter((_, e) => groupOf[e] === g).sort((a, b) => b - a);
        return o.method === 'group_limited_greedy' ? mine[0] : mine[0] + mine[1];
      });
      const kept = gscore
        .map((_, g) => g)
        .sort((a, b) => gscore[b] - gscore[a] || a - b)
        .slice(0, o.topkGroup);
      allowed = groupOf.map((g) => kept.includes(g));
    }
    const order = c
      .map((_, e) => e)
      .filter((e) => allowed[e])
      .sort((a, b) => c[b] - c[a] || a - b)
      .slice(0, k);
    const picked = order.reduce((acc, e) => acc + s[e], 0);
    const div = o.renormalize ? picked + (o.scoring === 'sigmoid' ? 1e-20 : 0) : 1;
    for (const e of order) {
      idx.push(e);
      w.push((s[e] / div) * o.scale);
    }
  }
  return { idx, w };
}

/** The stable counting sort of moe_permute: counts per expert and each pair's destination row. */
export function permuteRef(topkIdx: readonly number[], E: number): { counts: number[]; rowMap: number[] } {
  const counts = new Array<number>(E).fill(0);
  for (const e of topkIdx) if (e >= 0 && e < E) counts[e]++;
  const rowMap = new Array<number>(topkIdx.length).fill(-1);
  let next = 0;
  for (let e = 0; e < E; e++)
    topkIdx.forEach((x, i) => {
      if (x === e) rowMap[i] = next++;
    });
  return { counts, rowMap };
}

/** out[t] (+)= sum_j w[t,j] * y[rowMap[t,j]] over the routed slots. */
export function unpermuteRef(y: Vec, rowMap: readonly number[], w: Vec, T: number, k: number, H: number, prior?: Vec): Float64Array {
  const out = new Float64Array(T * H);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++) {
      let acc = prior ? prior[t * H + h] : 0;
      for (let j = 0; j < k; j++) {
        const r = rowMap[t * k + j];
        if (r >= 0) acc += w[t * k + j] * y[r * H + h];
      }
      out[t * H + h] = acc;
    }
  return out;
}

export function sigmoidGateAddRef(out: Vec, y: Vec, gate: Vec, T: number, H: number): Float64Array {
  const res = Float64Array.from(out);
  for (let t = 0; t < T; t++) {
    const s = 1 / (1 + Math.exp(-gate[t]));
    for (let h = 0; h < H; h++) res[t * H + h] += s * y[t * H + h];
  }
  return res;
}

/** out[r] = x[idx[r]] for rows of H. */
export function gatherRowsRef(x: Vec, idx: readonly number[], H: number): Float64Array {
  const out = new Float64Array(idx.length * H);
  idx.forEach((i, r) => {
    for (let h = 0; h < H; h++) out[r * H + h] = x[i * H + h];
  });
  return out;
}

const MASK64 = (1n << 64n) - 1n;

function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** fill_random's values in fp32, following native/cpu/random.h step by step in BigInt arithmetic. */
export function fillRandomRef(n: number, seed: number, std: number): Float32Array {
  const state = mix64(BigInt(seed));
  const scale = Math.fround(Math.fround(std) * Math.fround(Math.sqrt(3)));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = mix64((state + BigInt(i + 1) * 0x9e3779b97f4a7c15n) & MASK64);
    const u = Number(h >> 40n) * 2 ** -23 - 1;
    out[i] = Math.fround(scale * u);
  }
  return out;
}
