// make-model: writes a random checkpoint in the Hugging Face layout (config.json in transformers 5
// spelling + model.safetensors, or shards + model.safetensors.index.json), tensor by tensor and
// chunk by chunk, so the tens-of-GB presets are written with a few MB of memory.
//
// Initialisation keeps activations O(1) through the layers: projections ~ 1/sqrt(fan_in); the
// residual writers (o_proj, down_proj) further / sqrt(2 * layers) so the residual stream does not
// grow with depth; the router 3/sqrt(H) so router logits have std ~3 and routing is far from
// uniform; norms 1 + 0.1 * noise (not exactly 1, so that a norm weight applied to the wrong
// tensor, or not at all, changes the output).
import { promises as fs } from 'fs';
import * as path from 'path';
import type { DType } from '../native/addonTypes';
import { f32ArrayToBf16, f32ArrayToF16 } from './bf16';
import { parseModelConfig, type FloatDType, type ModelSpec } from './config';
import type { JsonObject } from './configFields';
import { ModelError } from './errors';
import { applyOverrides, parseOverride } from './overrides';
import { DEFAULT_PRESET, PRESETS, findPreset } from './presets';
import { Xoshiro128 } from './prng';
import { dtypeBytes } from './safetensors';
import { INDEX_FILE } from './safetensorsStore';
import { ShardedWriter } from './safetensorsWriter';
import { checkpointTensors, type ExpertLayout, type TensorPiece } from './weightNames';

export interface MakeModelOptions {
  /** A preset name (see listPresets()); default "tiny". */
  preset?: string;
  /** Output folder; must not exist or be empty (unless force). */
  out: string;
  seed?: number;
  /** Storage dtype; default the preset's (f32 for tiny presets, bf16 for real ones). */
  dtype?: FloatDType;
  /** How experts are stored; default per_expert (what transformers' save_pretrained writes). */
  expertLayout?: ExpertLayout;
  /** Largest shard; default 4 GB. A single shard is written as model.safetensors with no index. */
  maxShardBytes?: number;
  /** Write into a non-empty folder (files of the same names are replaced). */
  force?: boolean;
  /** `KEY=VALUE` changes to the preset's config (overrides.ts), e.g. num_hidden_layers=8. */
  overrides?: readonly string[];
}

export interface MakeModelResult {
  dir: string;
  spec: ModelSpec;
  /** Safetensors files written (names inside dir). */
  files: string[];
  totalBytes: number;
}

export const DEFAULT_MAX_SHARD_BYTES = 4_000_000_000;

/** Elements generated per step: bounds memory (16 MB of f32 scratch). */
const CHUNK_ELEMENTS = 1 << 22;

const DTYPE_CONFIG_NAME: Record<FloatDType, string> = { f32: 'float32', bf16: 'bfloat16', f16: 'float16' };

/** The standard deviation (or constant) of a piece of a tensor. */
function initOf(piece: TensorPiece, spec: ModelSpec): { mean: number; std: number } {
  const H = spec.hiddenSize;
  const residualScale = 1 / Math.sqrt(2 * spec.numLayers);
  const fanIn = (): number => 1 / Math.sqrt(piece.fanIn);
  switch (piece.role) {
    case 'embed':
      // Tied: the embedding is also the output projection; keep logits ~ N(0, 2^2).
      return { mean: 0, std: spec.tieWordEmbeddings ? 2 / Math.sqrt(H) : 1 };
    case 'lm_head':
      return { mean: 0, std: 2 / Math.sqrt(H) };
    case 'norm':
      return { mean: 1, std: 0.1 };
    case 'q':
    case 'k':
    case 'v':
    case 'gate':
    case 'up':
    case 'shared_gate':
      return { mean: 0, std: fanIn() };
    case 'o':
    case 'down':
      return { mean: 0, std: fanIn() * residualScale };
    case 'router':
      return { mean: 0, std: 3 / Math.sqrt(H) };
    case 'qkv_bias':
      return { mean: 0, std: 0.1 };
    case 'o_bias':
      return { mean: 0, std: 0.02 };
  }
}

/** Encodes float32 values in the storage dtype; returns a view of `out`'s bytes. */
function encode(values: Float32Array, dtype: DType, u16: Uint16Array): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const dst = u16.subarray(0, values.length);
  if (dtype === 'bf16') f32ArrayToBf16(values, dst);
  else f32ArrayToF16(values, dst);
  return new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
}

async function checkOutDir(out: string, force: boolean): Promise<void> {
  let entries: string[];
  try {
    entries = await fs.readdir(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ModelError('MAKE_MODEL_OPTIONS', `${out}: cannot use as output folder (${(e as Error).message})`, out);
  }
  if (entries.length > 0 && !force) {
    throw new ModelError(
      'MAKE_MODEL_OPTIONS',
      `${out}: output folder is not empty (${entries.length} entries); pass force to write into it`,
      out,
    );
  }
  // A stale index or shard from an earlier run would shadow or join the new checkpoint.
  for (const e of entries) {
    if (e === INDEX_FILE || e.endsWith('.safetensors')) await fs.rm(path.join(out, e));
  }
}

/** The config.json make-model writes for a preset and dtype, with `--override KEY=VALUE`s applied (overrides.ts). */
export function presetConfig(presetName: string, dtype?: FloatDType, overrides: readonly string[] = []): JsonObject {
  const preset = findPreset(presetName);
  if (!preset) {
    throw new ModelError('PRESET_UNKNOWN', `unknown preset "${presetName}"; presets: ${PRESETS.map((p) => p.name).join(', ')}`);
  }
  const config = dtype ? { ...preset.config, dtype: DTYPE_CONFIG_NAME[dtype] } : { ...preset.config };
  return overrides.length ? applyOverrides(config, overrides.map(parseOverride), `preset ${presetName}`) : config;
}

/**
 * Writes a random checkpoint. onProgress gets (bytes written, total bytes) of tensor data after
 * every chunk. Same options and seed => byte-identical files.
 */
export async function makeModel(opts: MakeModelOptions, onProgress?: (written: number, total: number) => void): Promise<MakeModelResult> {
  const presetName = opts.preset ?? DEFAULT_PRESET;
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new ModelError('MAKE_MODEL_OPTIONS', `seed must be a non-negative integer, got ${seed}`);
  }
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new ModelError('MAKE_MODEL_OPTIONS', `maxShardBytes must be > 0, got ${maxShardBytes}`);
  const config = presetConfig(presetName, opts.dtype, opts.overrides);
  const spec = parseModelConfig(config, `preset ${presetName}`);
  const dtype: DType = spec.dtype;
  const layout = opts.expertLayout ?? 'per_expert';

  await checkOutDir(opts.out, opts.force ?? false);
  await fs.mkdir(opts.out, { recursive: true });

  const planned = checkpointTensors(spec, layout);
  const writer = await ShardedWriter.create(
    opts.out,
    planned.map((t) => ({ name: t.name, dtype, shape: t.shape })),
    { maxShardBytes, onProgress },
  );
  const values = new Float32Array(CHUNK_ELEMENTS);
  const u16 = new Uint16Array(CHUNK_ELEMENTS);
  try {
    for (const t of planned) {
      // Fill `values` piece by piece; flush whenever it is full. Each piece draws from its own stream.
      let fill = 0;
      for (const piece of t.pieces) {
        const { mean, std } = initOf(piece, spec);
        const rng = new Xoshiro128(seed, piece.key);
        let left = piece.numel;
        while (left > 0) {
          const n = Math.min(left, CHUNK_ELEMENTS - fill);
          rng.fillNormalish(values, std, fill, n);
          if (mean !== 0) for (let i = fill; i < fill + n; i++) values[i] = values[i] + mean;
          fill += n;
          left -= n;
          if (fill === CHUNK_ELEMENTS) {
            await writer.append(t.name, encode(values, dtype, u16));
            fill = 0;
          }
        }
      }
      if (fill > 0) await writer.append(t.name, encode(values.subarray(0, fill), dtype, u16));
    }
    await writer.close();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  // config.json last: a folder with a config is a finished checkpoint.
  await fs.writeFile(path.join(opts.out, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return {
    dir: opts.out,
    spec,
    files: writer.shards.map((s) => s.file),
    totalBytes: writer.totalBytes,
  };
}

/** Bytes of tensor data a preset makes (for a progress bar's total before starting). */
export function presetBytes(presetName: string, dtype?: FloatDType): number {
  const spec = parseModelConfig(presetConfig(presetName, dtype), `preset ${presetName}`);
  const per = dtypeBytes(spec.dtype);
  return checkpointTensors(spec, 'per_expert').reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * per, 0);
}
