// A Hugging Face checkpoint folder (config.json + safetensors) seen as the engine needs it: typed
// accessors by role that hide the naming (transformers 4 / 5, per-expert / fused experts) and read
// only the bytes asked for. Every accessor checks the shape against the ModelSpec, so a config that
// does not match its weights fails at load, naming the tensor and its file.
import type { DType } from '../native/addonTypes';
import { configDeclaresDType, parseModelConfig, readConfigJson, type FloatDType, type ModelSpec } from './config';
import { ModelError } from './errors';
import { dtypeBytes } from './safetensors';
import type { RawTensor } from './safetensorsReader';
import { SafetensorsStore } from './safetensorsStore';
import {
  EMBED,
  FINAL_NORM,
  LM_HEAD,
  dbrxNames,
  fusedExpertNames,
  layerNames,
  perExpertNames,
  routerNames,
  sharedExpertName,
  type ExpertLayout,
  type MlaWeightName,
  type PerExpertNames,
} from './weightNames';

export type { RawTensor } from './safetensorsReader';
export type AttentionProj = 'q' | 'k' | 'v' | 'o';

type LayerExperts = { layout: 'fused' } | { layout: 'per_expert'; names: (e: number) => PerExpertNames };

const FLOAT_DTYPES: readonly DType[] = ['f32', 'bf16', 'f16'];

/** Every layer config.json names has tensors in the checkpoint (checked from the names alone, before any read). */
function checkLayersPresent(spec: ModelSpec, names: readonly string[], configFile: string): void {
  const present = new Set<number>();
  for (const n of names) {
    const m = /^(?:model\.layers|transformer\.blocks)\.(\d+)\./.exec(n);
    if (m) present.add(Number(m[1]));
  }
  for (let l = 0; l < spec.numLayers; l++) {
    if (!present.has(l)) {
      const held = present.size === 0 ? 'no layer tensors' : `tensors of ${present.size} layers`;
      throw new ModelError(
        'CHECKPOINT_MISSING_LAYERS',
        `${configFile}: num_hidden_layers is ${spec.numLayers} but the checkpoint has no tensors of layer ${l} (it holds ${held})`,
        configFile,
      );
    }
  }
}

export class Checkpoint {
  private readonly experts = new Map<number, LayerExperts>();

  private constructor(
    readonly dir: string,
    readonly configFile: string,
    readonly spec: ModelSpec,
    private readonly store: SafetensorsStore,
  ) {}

  /** Opens `dir`: parses config.json and the safetensors headers (or index); reads no weights. */
  static async open(dir: string): Promise<Checkpoint> {
    const { json, file } = await readConfigJson(dir);
    let spec = parseModelConfig(json, file);
    const store = await SafetensorsStore.open(dir);
    try {
      checkLayersPresent(spec, store.names(), file);
      const embed = spec.family === 'dbrx' ? dbrxNames.embed : EMBED;
      if (!configDeclaresDType(json) && store.has(embed)) {
        // No torch_dtype/dtype in config.json: the checkpoint's own dtype is the truth.
        const dtype = await store.dtypeOf(embed);
        if (FLOAT_DTYPES.includes(dtype)) spec = { ...spec, dtype: dtype as FloatDType };
      }
    } catch (e) {
      await store.close();
      throw e;
    }
    return new Checkpoint(dir, file, spec, store);
  }

  async close(): Promise<void> {
    await this.store.close();
  }

  /** Raw access by Hugging Face name. */
  has(name: string): boolean {
    return this.store.has(name);
  }

  tensorNames(): string[] {
    return this.store.names();
  }

  async tensor(name: string): Promise<RawTensor> {
    return this.store.read(name);
  }

  private async checked(name: string, expected: number[]): Promise<RawTensor> {
    await this.checkShape(name, expected);
    return this.store.read(name);
  }

  private async checkShape(name: string, expected: readonly number[]): Promise<void> {
    const entry = await this.store.entry(name);
    if (entry.shape.length !== expected.length || entry.shape.some((d, i) => d !== expected[i])) {
      throw new ModelError(
        'CHECKPOINT_BAD_WEIGHT',
        `${entry.file}: "${name}" has shape [${entry.shape.join(', ')}], ${this.configFile} implies [${expected.join(', ')}]`,
        entry.file,
      );
    }
    const dtype = await this.store.dtypeOf(name);
    if (!FLOAT_DTYPES.includes(dtype)) {
      throw new ModelError('CHECKPOINT_BAD_WEIGHT', `${entry.file}: "${name}" is ${dtype}, weights must be f32, bf16 or f16`, entry.file);
    }
  }

  private checkLayer(l: number): void {
    if (!Number.isSafeInteger(l) || l < 0 || l >= this.spec.numLayers) {
      throw new RangeError(`layer ${l} out of range [0, ${this.spec.numLayers})`);
    }
  }

  private checkMoeLayer(l: number): void {
    this.checkLayer(l);
    if (this.spec.layers[l].mlp !== 'moe') throw new RangeError(`layer ${l} has a dense MLP, not experts`);
  }

  private checkExperts(first: number, count: number): void {
    const E = this.spec.moe.numExperts;
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || first + count > E) {
      throw new RangeError(`experts [${first}, ${first + count}) out of range [0, ${E})`);
    }
  }

  // ---- whole-model weights

  private get dbrx(): boolean {
    return this.spec.family === 'dbrx';
  }

  async embed(): Promise<RawTensor> {
    return this.checked(this.dbrx ? dbrxNames.embed : EMBED, [this.spec.vocabSize, this.spec.hiddenSize]);
  }

  async finalNorm(): Promise<RawTensor> {
    return this.checked(this.dbrx ? dbrxNames.finalNorm : FINAL_NORM, [this.spec.hiddenSize]);
  }

  /** True when the output projection is the embedding (tie_word_embeddings, or no lm_head.weight). */
  get tiedLmHead(): boolean {
    return this.spec.tieWordEmbeddings || !this.store.has(LM_HEAD);
  }

  /** lm_head [V, H]; the embedding when tied. */
  async lmHead(): Promise<RawTensor> {
    return this.tiedLmHead ? this.embed() : this.checked(LM_HEAD, [this.spec.vocabSize, this.spec.hiddenSize]);
  }

  // ---- attention

  async inputNorm(l: number): Promise<RawTensor> {
    this.checkLayer(l);
    return this.checked(this.dbrx ? dbrxNames.norm1(l) : layerNames.inputNorm(l), [this.spec.hiddenSize]);
  }

  async postAttentionNorm(l: number): Promise<RawTensor> {
    this.checkLayer(l);
    return this.checked(this.dbrx ? dbrxNames.norm2(l) : layerNames.postAttentionNorm(l), [this.spec.hiddenSize]);
  }

  private projRows(p: AttentionProj): number {
    const s = this.spec;
    return p === 'q' ? s.numHeads * s.headDim : p === 'o' ? s.hiddenSize : s.numKvHeads * s.headDim;
  }

  /** q/k/v_proj [heads*hd, H] or o_proj [H, nh*hd]. */
  async attnProj(l: number, p: AttentionProj): Promise<RawTensor> {
    this.checkLayer(l);
    const cols = p === 'o' ? this.spec.numHeads * this.spec.headDim : this.spec.hiddenSize;
    if (this.dbrx) return this.dbrxProj(l, p, cols);
    return this.checked(layerNames.proj(l, p), [this.projRows(p), cols]);
  }

  /** DBRX: q, k or v as rows of the fused Wqkv [(nq + 2 nkv) * hd, H]; o is out_proj. */
  private async dbrxProj(l: number, p: AttentionProj, cols: number): Promise<RawTensor> {
    if (p === 'o') return this.checked(dbrxNames.outProj(l), [this.projRows(p), cols]);
    const s = this.spec;
    const name = dbrxNames.wqkv(l);
    await this.checkShape(name, [(s.numHeads + 2 * s.numKvHeads) * s.headDim, cols]);
    const first = p === 'q' ? 0 : p === 'k' ? s.numHeads * s.headDim : (s.numHeads + s.numKvHeads) * s.headDim;
    return this.store.readRows(name, first, this.projRows(p));
  }

  /** The projection's bias, or undefined when the model has none (spec.attentionBias / attentionOutputBias). */
  async attnBias(l: number, p: AttentionProj): Promise<RawTensor | undefined> {
    this.checkLayer(l);
    const has = p === 'o' ? this.spec.attentionOutputBias : this.spec.attentionBias;
    if (!has) return undefined;
    return this.checked(layerNames.projBias(l, p), [this.projRows(p)]);
  }

  /** Per-head RMSNorm weights [hd] (Qwen3-MoE), or undefined. */
  async qNorm(l: number): Promise<RawTensor | undefined> {
    this.checkLayer(l);
    return this.spec.qkNorm ? this.checked(layerNames.qNorm(l), [this.spec.headDim]) : undefined;
  }

  async kNorm(l: number): Promise<RawTensor | undefined> {
    this.checkLayer(l);
    return this.spec.qkNorm ? this.checked(layerNames.kNorm(l), [this.spec.headDim]) : undefined;
  }

  // ---- MLP of dense layers and the shared expert

  /** gate_proj and up_proj rows stacked: [2I, H], the layout of the engine's swiglu. */
  private async gateUpPair(gate: string, up: string, I: number): Promise<RawTensor> {
    const H = this.spec.hiddenSize;
    await this.checkShape(gate, [I, H]);
    await this.checkShape(up, [I, H]);
    const dtype = await this.sameDType([gate, up]);
    const half = I * H * dtypeBytes(dtype);
    const bytes = new Uint8Array(2 * half);
    await this.store.readRows(gate, 0, I, bytes.subarray(0, half));
    await this.store.readRows(up, 0, I, bytes.subarray(half));
    return { name: `${gate}+${up}`, dtype, shape: [2 * I, H], bytes };
  }

  private async sameDType(names: string[]): Promise<DType> {
    const dtypes = await Promise.all(names.map((n) => this.store.dtypeOf(n)));
    if (dtypes.some((d) => d !== dtypes[0])) {
      const file = (await this.store.entry(names[0])).file;
      throw new ModelError(
        'CHECKPOINT_BAD_WEIGHT',
        `${file}: ${names.map((n, i) => `"${n}" is ${dtypes[i]}`).join(', ')}; they are used together and must share a dtype`,
        file,
      );
    }
    return dtypes[0];
  }

  async denseGateUp(l: number): Promise<RawTensor> {
    this.checkLayer(l);
    if (this.spec.layers[l].mlp !== 'dense') throw new RangeError(`layer ${l} is a MoE layer, not dense`);
    return this.gateUpPair(layerNames.denseMlp(l, 'gate'), layerNames.denseMlp(l, 'up'), this.spec.denseIntermediate);
  }

  async denseDown(l: number): Promise<RawTensor> {
    this.checkLayer(l);
    if (this.spec.layers[l].mlp !== 'dense') throw new RangeError(`layer ${l} is a MoE layer, not dense`);
    return this.checked(layerNames.denseMlp(l, 'down'), [this.spec.hiddenSize, this.spec.denseIntermediate]);
  }

  private checkShared(l: number): number {
    this.checkMoeLayer(l);
    const Is = this.spec.moe.sharedIntermediate;
    if (Is === 0) throw new RangeError(`${this.spec.family} has no shared expert`);
    return Is;
  }

  async sharedExpertGateUp(l: number): Promise<RawTensor> {
    const Is = this.checkShared(l);
    return this.gateUpPair(sharedExpertName(this.spec, l, 'gate'), sharedExpertName(this.spec, l, 'up'), Is);
  }

  async sharedExpertDown(l: number): Promise<RawTensor> {
    const Is = this.checkShared(l);
    return this.checked(sharedExpertName(this.spec, l, 'down'), [this.spec.hiddenSize, Is]);
  }

  /** shared_expert_gate [1, H] (Qwen2-MoE): the shared output is scaled by sigmoid(x @ w^T). */
  async sharedExpertGate(l: number): Promise<RawTensor> {
    this.checkMoeLayer(l);
    if (!this.spec.moe.sharedGate) throw new RangeError(`${this.spec.family} has no shared_expert_gate`);
    return this.checked(layerNames.sharedExpertGate(l), [1, this.spec.hiddenSize]);
  }

  // ---- multi-head latent attention (DeepSeek)

  /** The shapes of MLA's tensors (spec.mla): weights [out, in], norms and biases [out]. */
  mlaShape(name: MlaWeightName, what: 'weight' | 'bias' = 'weight'): number[] {
    const s = this.spec;
    const m = s.mla;
    if (!m) throw new RangeError(`${s.family} has no multi-head latent attention`);
    const qk = m.qkNopeHeadDim + m.qkRopeHeadDim;
    const rows: Record<MlaWeightName, [number, number]> = {
      q_proj: [s.numHeads * qk, s.hiddenSize],
      q_a_proj: [m.qLoraRank ?? 0, s.hiddenSize],
      q_a_layernorm: [m.qLoraRank ?? 0, 0],
      q_b_proj: [s.numHeads * qk, m.qLoraRank ?? 0],
      kv_a_proj_with_mqa: [m.kvLoraRank + m.qkRopeHeadDim, s.hiddenSize],
      kv_a_layernorm: [m.kvLoraRank, 0],
      kv_b_proj: [s.numHeads * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank],
      o_proj: [s.hiddenSize, s.numHeads * m.vHeadDim],
    };
    const [out, inp] = rows[name];
    return what === 'bias' || inp === 0 ? [out] : [out, inp];
  }

  /** An MLA tensor of layer l (self_attn.<name>.weight or .bias), shape-checked. */
  async mlaTensor(l: number, name: MlaWeightName, what: 'weight' | 'bias' = 'weight'): Promise<RawTensor> {
    this.checkLayer(l);
    return this.checked(layerNames.mla(l, name, what), this.mlaShape(name, what));
  }

  /** e_score_correction_bias [E] (DeepSeek-V3's router). */
  async routerBias(l: number): Promise<RawTensor> {
    this.checkMoeLayer(l);
    return this.checked(layerNames.routerBias(l), [this.spec.moe.numExperts]);
  }

  /** The MLA tensors a layer has (q_proj or the q low-rank path; biases with attention_bias). */
  mlaNames(): { name: MlaWeightName; what: 'weight' | 'bias' }[] {
    const m = this.spec.mla;
    if (!m) return [];
    const names: MlaWeightName[] =
      m.qLoraRank === null ? ['q_proj'] : ['q_a_proj', 'q_a_layernorm', 'q_b_proj'];
    names.push('kv_a_proj_with_mqa', 'kv_a_layernorm', 'kv_b_proj', 'o_proj');
    const out: { name: MlaWeightName; what: 'weight' | 'bias' }[] = names.map((name) => ({ name, what: 'weight' as const }));
    if (m.attentionBias) {
      for (const name of ['q_a_proj', 'kv_a_proj_with_mqa', 'o_proj'] as const) {
        if (name !== 'q_a_proj' || m.qLoraRank !== null) out.push({ name, what: 'bias' });
      }
    }
    return out;
  }

  // ---- router and routed experts

  private firstPresent(candidates: string[]): string {
    const name = candidates.find((n) => this.store.has(n));
    if (!name) {
      throw new ModelError('TENSOR_MISSING', `${this.dir}: checkpoint has none of ${candidates.map((c) => `"${c}"`).join(', ')}`, this.dir);
    }
    return name;
  }

  /** Router gate [E, H]. */
  async router(l: number): Promise<RawTensor> {
    this.checkMoeLayer(l);
    const name = this.dbrx ? dbrxNames.router(l) : this.firstPresent(routerNames(this.spec, l));
    return this.checked(name, [this.spec.moe.numExperts, this.spec.hiddenSize]);
  }

  /**
   * True when expertDown / expertsDown give each expert's down projection transposed, [I, H] (DBRX's w2):
   * the loader transposes it on the device.
   */
  get expertDownTransposed(): boolean {
    return this.dbrx;
  }

  /** DBRX's experts [first, first + count): rows [e*I, (e+1)*I) of w1 then v1 per expert, or of w2. */
  private async dbrxExperts(l: number, first: number, count: number, parts: readonly ('w1' | 'v1' | 'w2')[]): Promise<RawTensor> {
    this.checkMoeLayer(l);
    this.checkExperts(first, count);
    const { hiddenSize: H } = this.spec;
    const { numExperts: E, expertIntermediate: I } = this.spec.moe;
    const names = parts.map((p) => dbrxNames.experts(l, p));
    for (const n of names) await this.checkShape(n, [E * I, H]);
    const dtype = await this.sameDType(names);
    const part = I * H * dtypeBytes(dtype);
    const bytes = new Uint8Array(count * names.length * part);
    const reads: Promise<RawTensor>[] = [];
    for (let j = 0; j < count; j++) {
      names.forEach((n, i) => {
        const at = (j * names.length + i) * part;
        reads.push(this.store.readRows(n, (first + j) * I, I, bytes.subarray(at, at + part)));
      });
    }
    await Promise.all(reads);
    return { name: `${names.join('+')}[experts ${first}..${first + count - 1}]`, dtype, shape: [count, names.length * I, H], bytes };
  }

  /** How layer l stores its experts (fused [E, ...] tensors or one tensor per expert). */
  expertLayout(l: number): ExpertLayout {
    if (this.dbrx) return 'fused';
    return this.layerExperts(l).layout;
  }

  private layerExperts(l: number): LayerExperts {
    this.checkMoeLayer(l);
    let found = this.experts.get(l);
    if (found) return found;
    const fused = fusedExpertNames(l);
    if (this.store.has(fused.gateUp) || this.store.has(fused.down)) {
      found = { layout: 'fused' };
    } else {
      const candidates = perExpertNames(this.spec, l, 0);
      const which = candidates.findIndex((c) => this.store.has(c.gate));
      if (which < 0) {
        throw new ModelError(
          'TENSOR_MISSING',
          `${this.dir}: layer ${l} has no experts: neither "${fused.gateUp}" (fused) nor ` +
            `${candidates.map((c) => `"${c.gate}"`).join(' / ')} (per expert)`,
          this.dir,
        );
      }
      found = { layout: 'per_expert', names: (e) => perExpertNames(this.spec, l, e)[which] };
    }
    this.experts.set(l, found);
    return found;
  }

  /** Expert e's [2I, H]: gate rows then up rows. */
  async expertGateUp(l: number, e: number): Promise<RawTensor> {
    const t = await this.expertsGateUp(l, e, 1);
    return { ...t, shape: t.shape.slice(1) };
  }

  /** Expert e's down_proj [H, I]. */
  async expertDown(l: number, e: number): Promise<RawTensor> {
    const t = await this.expertsDown(l, e, 1);
    return { ...t, shape: t.shape.slice(1) };
  }

  /** Experts [first, first + count) stacked: [count, 2I, H], the w of expert_matmul. */
  async expertsGateUp(l: number, first: number, count: number): Promise<RawTensor> {
    if (this.dbrx) return this.dbrxExperts(l, first, count, ['w1', 'v1']);
    const le = this.layerExperts(l);
    this.checkExperts(first, count);
    const { hiddenSize: H } = this.spec;
    const { numExperts: E, expertIntermediate: I } = this.spec.moe;
    if (le.layout === 'fused') {
      const name = fusedExpertNames(l).gateUp;
      await this.checkShape(name, [E, 2 * I, H]);
      return this.store.readRows(name, first, count);
    }
    const names: string[] = [];
    for (let e = first; e < first + count; e++) names.push(le.names(e).gate, le.names(e).up);
    for (const n of names) await this.checkShape(n, [I, H]);
    const dtype = await this.sameDType(names);
    const part = I * H * dtypeBytes(dtype);
    const bytes = new Uint8Array(names.length * part);
    await Promise.all(names.map((n, i) => this.store.readRows(n, 0, I, bytes.subarray(i * part, (i + 1) * part))));
    return { name: `${names[0]}..${names[names.length - 1]}`, dtype, shape: [count, 2 * I, H], bytes };
  }

  /** Experts [first, first + count) down_proj stacked: [count, H, I] ([count, I, H] where expertDownTransposed). */
  async expertsDown(l: number, first: number, count: number): Promise<RawTensor> {
    if (this.dbrx) return this.dbrxExperts(l, first, count, ['w2']);
    const le = this.layerExperts(l);
    this.checkExperts(first, count);
    const { hiddenSize: H } = this.spec;
    const { numExperts: E, expertIntermediate: I } = this.spec.moe;
    if (le.layout === 'fused') {
      const name = fusedExpertNames(l).down;
      await this.checkShape(name, [E, H, I]);
      return this.store.readRows(name, first, count);
    }
    const names: string[] = [];
    for (let e = first; e < first + count; e++) names.push(le.names(e).down);
    for (const n of names) await this.checkShape(n, [H, I]);
    const dtype = await this.sameDType(names);
    const part = H * I * dtypeBytes(dtype);
    const bytes = new Uint8Array(names.length * part);
    await Promise.all(names.map((n, i) => this.store.readRows(n, 0, H, bytes.subarray(i * part, (i + 1) * part))));
    return { name: `${names[0]}..${names[names.length - 1]}`, dtype, shape: [count, H, I], bytes };
  }

  /**
   * Checks, from the headers alone, that every weight the engine needs is present with the shape
   * the config implies. Throws the first problem found.
   */
  async verify(): Promise<void> {
    const s = this.spec;
    const H = s.hiddenSize;
    if (this.dbrx) return this.verifyDbrx();
    await this.checkShape(EMBED, [s.vocabSize, H]);
    await this.checkShape(FINAL_NORM, [H]);
    if (!this.tiedLmHead) await this.checkShape(LM_HEAD, [s.vocabSize, H]);
    for (let l = 0; l < s.numLayers; l++) {
      await this.checkShape(layerNames.inputNorm(l), [H]);
      await this.checkShape(layerNames.postAttentionNorm(l), [H]);
      for (const { name, what } of this.mlaNames()) await this.checkShape(layerNames.mla(l, name, what), this.mlaShape(name, what));
      for (const p of s.mla ? [] : (['q', 'k', 'v', 'o'] as const)) {
        const cols = p === 'o' ? s.numHeads * s.headDim : H;
        await this.checkShape(layerNames.proj(l, p), [this.projRows(p), cols]);
        if (p === 'o' ? s.attentionOutputBias : s.attentionBias) {
          await this.checkShape(layerNames.projBias(l, p), [this.projRows(p)]);
        }
      }
      if (s.qkNorm) {
        await this.checkShape(layerNames.qNorm(l), [s.headDim]);
        await this.checkShape(layerNames.kNorm(l), [s.headDim]);
      }
      if (s.layers[l].mlp === 'dense') {
        const I = s.denseIntermediate;
        await this.checkShape(layerNames.denseMlp(l, 'gate'), [I, H]);
        await this.checkShape(layerNames.denseMlp(l, 'up'), [I, H]);
        await this.checkShape(layerNames.denseMlp(l, 'down'), [H, I]);
        continue;
      }
      const { numExperts: E, expertIntermediate: I, sharedIntermediate: Is } = s.moe;
      await this.checkShape(this.firstPresent(routerNames(s, l)), [E, H]);
      const le = this.layerExperts(l);
      if (le.layout === 'fused') {
        await this.checkShape(fusedExpertNames(l).gateUp, [E, 2 * I, H]);
        await this.checkShape(fusedExpertNames(l).down, [E, H, I]);
      } else {
        for (let e = 0; e < E; e++) {
          const n = le.names(e);
          await this.checkShape(n.gate, [I, H]);
          await this.checkShape(n.up, [I, H]);
          await this.checkShape(n.down, [H, I]);
        }
      }
      if (Is > 0) {
        await this.checkShape(sharedExpertName(s, l, 'gate'), [Is, H]);
        await this.checkShape(sharedExpertName(s, l, 'up'), [Is, H]);
        await this.checkShape(sharedExpertName(s, l, 'down'), [H, Is]);
      }
      if (s.moe.routing?.scoreCorrectionBias) await this.checkShape(layerNames.routerBias(l), [E]);
      if (s.moe.sharedGate) await this.checkShape(layerNames.sharedExpertGate(l), [1, H]);
    }
  }

  private async verifyDbrx(): Promise<void> {
    const s = this.spec;
    const { hiddenSize: H, headDim: hd } = s;
    const { numExperts: E, expertIntermediate: I } = s.moe;
    await this.checkShape(dbrxNames.embed, [s.vocabSize, H]);
    await this.checkShape(dbrxNames.finalNorm, [H]);
    await this.checkShape(LM_HEAD, [s.vocabSize, H]);
    for (let l = 0; l < s.numLayers; l++) {
      await this.checkShape(dbrxNames.norm1(l), [H]);
      await this.checkShape(dbrxNames.norm2(l), [H]);
      await this.checkShape(dbrxNames.wqkv(l), [(s.numHeads + 2 * s.numKvHeads) * hd, H]);
      await this.checkShape(dbrxNames.outProj(l), [H, s.numHeads * hd]);
      await this.checkShape(dbrxNames.router(l), [E, H]);
      for (const p of ['w1', 'v1', 'w2'] as const) await this.checkShape(dbrxNames.experts(l, p), [E * I, H]);
    }
  }
}
