// Fills weights from a Hugging Face checkpoint: reads the raw bytes of each tensor (only this rank's
// experts), uploads them in the file's dtype, and converts on the device when the engine stores
// another dtype.
import type { ModelSpec } from '../model/config';
import { Checkpoint, type RawTensor } from '../model/checkpoint';
import { tensorFromFloat32, type Device, type Stream, type Tensor } from '../native/device';
import * as ops from '../native/ops';
import { ModelError } from '../model/errors';
import type { WeightKey, WeightSource } from './weights';

export interface CheckpointSourceOptions {
  /** Count NaN/Inf of every weight on the device as it loads (one host read per tensor); fail naming the tensor. */
  checkFinite?: boolean;
}

export class CheckpointSource implements WeightSource {
  private constructor(
    private readonly ckpt: Checkpoint,
    private readonly options: CheckpointSourceOptions,
  ) {}

  static async open(dir: string, _spec?: ModelSpec, options: CheckpointSourceOptions = {}): Promise<CheckpointSource> {
    return new CheckpointSource(await Checkpoint.open(dir), options);
  }

  get spec(): ModelSpec {
    return this.ckpt.spec;
  }

  hasLmHead(): boolean {
    return !this.ckpt.tiedLmHead;
  }

  async fill(key: WeightKey, dst: Tensor, s: Stream): Promise<void> {
    const raw = await this.read(key);
    if (raw.shape.reduce((a, b) => a * b, 1) !== dst.numel) {
      throw new Error(`${raw.name}: [${raw.shape}] does not fill a tensor of shape [${dst.shape}]`);
    }
    if (key.role === 'expertDown' && this.ckpt.expertDownTransposed) {
      this.transposeInto(s, dst, raw);
    } else if (raw.dtype === dst.dtype) {
      dst.upload(s, raw.bytes);
    } else {
      const staged = dst.device.tensor(raw.dtype, dst.shape);
      staged.upload(s, raw.bytes);
      ops.copy(s, dst, staged);
      staged.dispose();
    }
    if (this.options.checkFinite) await checkFinite(raw.name, dst, s);
  }

  private async read(key: WeightKey): Promise<RawTensor> {
    const c = this.ckpt;
    const l = key.layer ?? -1;
    const must = async (t: Promise<RawTensor | undefined>, what: string): Promise<RawTensor> => {
      const v = await t;
      if (!v) throw new Error(`${c.dir}: layer ${l} has no ${what}`);
      return v;
    };
    switch (key.role) {
      case 'embed':
        return c.embed();
      case 'finalNorm':
        return c.finalNorm();
      case 'lmHead':
        return c.lmHead();
      case 'inputNorm':
        return c.inputNorm(l);
      case 'postNorm':
        return c.postAttentionNorm(l);
      case 'q':
        return c.spec.mla ? c.mlaTensor(l, 'q_proj') : c.attnProj(l, 'q');
      case 'o':
        return c.spec.mla ? c.mlaTensor(l, 'o_proj') : c.attnProj(l, 'o');
      case 'k':
      case 'v':
        return c.attnProj(l, key.role);
      case 'mlaQA':
        return c.mlaTensor(l, 'q_a_proj');
      case 'mlaQABias':
        return c.mlaTensor(l, 'q_a_proj', 'bias');
      case 'mlaQANorm':
        return c.mlaTensor(l, 'q_a_layernorm');
      case 'mlaQB':
        return c.mlaTensor(l, 'q_b_proj');
      case 'mlaKvA':
        return c.mlaTensor(l, 'kv_a_proj_with_mqa');
      case 'mlaKvABias':
        return c.mlaTensor(l, 'kv_a_proj_with_mqa', 'bias');
      case 'mlaKvANorm':
        return c.mlaTensor(l, 'kv_a_layernorm');
      case 'mlaKvB':
        return c.mlaTensor(l, 'kv_b_proj');
      case 'routerBias':
        return c.routerBias(l);
      case 'qBias':
        return must(c.attnBias(l, 'q'), 'q_proj bias');
      case 'kBias':
        return must(c.attnBias(l, 'k'), 'k_proj bias');
      case 'vBias':
        return must(c.attnBias(l, 'v'), 'v_proj bias');
      case 'oBias':
        return c.spec.mla ? c.mlaTensor(l, 'o_proj', 'bias') : must(c.attnBias(l, 'o'), 'o_proj bias');
      case 'qNorm':
        return must(c.qNorm(l), 'q_norm');
      case 'kNorm':
        return must(c.kNorm(l), 'k_norm');
      case 'router':
        return c.router(l);
      case 'expertGateUp':
        return c.expertGateUp(l, key.expert ?? -1);
      case 'expertDown':
        return c.expertDown(l, key.expert ?? -1);
      case 'sharedGateUp':
        return c.sharedExpertGateUp(l);
      case 'sharedDown':
        return c.sharedExpertDown(l);
      case 'sharedGate':
        return c.sharedExpertGate(l);
      case 'denseGateUp':
        return c.denseGateUp(l);
      case 'denseDown':
        return c.denseDown(l);
    }
  }

  private identity?: { device: Device; n: number; t: Tensor };

  /**
   * dst [H, I] = raw [I, H] transposed (DBRX's w2), on the device: dst = eye(H) @ raw^T with the matmul op,
   * exact in any dtype (one non-zero product per output, fp32 accumulation), so no host loop over the bytes
   * and no transpose op. eye(H) (f32) is made once per source and device.
   */
  private transposeInto(s: Stream, dst: Tensor, raw: RawTensor): void {
    const [I, H] = raw.shape.slice(-2);
    if (!this.identity || this.identity.device !== dst.device || this.identity.n !== H) {
      this.identity?.t.dispose();
      const eye = new Float32Array(H * H);
      for (let i = 0; i < H; i++) eye[i * H + i] = 1;
      this.identity = { device: dst.device, n: H, t: tensorFromFloat32(dst.device, s, 'f32', [H, H], eye) };
    }
    const src = dst.device.tensor(raw.dtype, [I, H]);
    src.upload(s, raw.bytes);
    ops.matmul(s, dst, this.identity.t, src);
    src.dispose();
  }

  close(): Promise<void> {
    this.identity?.t.dispose();
    return this.ckpt.close();
  }
}

/** Fails, naming the tensor, when `t` (as stored on the device) holds NaN or Inf. */
async function checkFinite(name: string, t: Tensor, s: Stream): Promise<void> {
  if (t.numel === 0) return;
  const rows = t.shape.length >= 2 ? t.shape[0] : 1;
  const view = t.reshape([rows, t.numel / rows]);
  const counts = t.device.tensor('i32', [rows]);
  try {
    ops.countNonfinite(s, counts, view);
    const perRow = (await counts.read(s)) as Int32Array;
    const bad = perRow.reduce((a, n) => a + n, 0);
    if (bad > 0) {
      const row = perRow.findIndex((n) => n > 0);
      throw new ModelError(
        'CHECKPOINT_NON_FINITE',
        `"${name}": ${bad} of ${t.numel} values are NaN or infinite${rows > 1 ? ` (the first in row ${row})` : ''} (--check-weights)`,
      );
    }
  } finally {
    counts.dispose();
    view.dispose();
  }
}
