// The cost models on disk: one JSON file per key (device, backend, dtype, layer dimensions, library
// versions, worlds) in the cache folder, written atomically, read back only for the key it was made for.
import { createHash } from 'crypto';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { COST_MODEL_VERSION, CostModelError, validateCostModel, type CostModel, type CostModelKey } from './costModel';

/** `$EPS_CACHE_DIR/cost-models`, else `~/.cache/eps-moe/cost-models`. */
export function defaultCostModelDir(env: NodeJS.ProcessEnv = process.env): string {
  const root = env.EPS_CACHE_DIR && env.EPS_CACHE_DIR !== '' ? env.EPS_CACHE_DIR : path.join(os.homedir(), '.cache', 'eps-moe');
  return path.join(root, 'cost-models');
}

/** The file name of a key: readable fields, then a hash of the whole key (versions included), then the model version. */
export function costModelKey(key: CostModelKey): string {
  const slug = (s: string) =>
    s
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-|-$/g, '') || 'device';
  const normal = normalizeKey(key);
  const hash = createHash('sha256').update(canonicalJson(normal)).digest('hex').slice(0, 12);
  const worlds = normal.worlds.join('_');
  return (
    `${key.backend}-${slug(key.device)}-${key.dtype}-h${key.hidden}-i${key.expertIntermediate}-s${key.sharedIntermediate}` +
    `-e${key.numExperts}-k${key.topK}-w${worlds}-${hash}-v${COST_MODEL_VERSION}.json`
  );
}

/** The model for `key` from the cache folder, or undefined when none was saved. */
export async function loadCostModel(dir: string, key: CostModelKey): Promise<CostModel | undefined> {
  const file = path.join(dir, costModelKey(key));
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CostModelError('EPS_COST_MODEL_INVALID', `${file}: not JSON (${(e as Error).message}); delete it to measure again`);
  }
  const model = validateCostModel(json, file);
  if (canonicalJson(normalizeKey(model.key)) !== canonicalJson(normalizeKey(key))) {
    throw new CostModelError('EPS_COST_MODEL_INVALID', `${file}: holds the model of another key; delete it to measure again`);
  }
  return model;
}

/** Writes the model under its key's name (atomically: a reader never sees half a file); returns the path. */
export async function saveCostModel(dir: string, model: CostModel): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, costModelKey(model.key));
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(model, null, 1)}\n`);
  await fs.rename(tmp, file);
  return file;
}

/**
 * A 32-bit digest of everything a plan reads from the model. Ranks must plan with the same model
 * (they must choose the same D); the executor can allGather this to check.
 */
export function costModelFingerprint(model: CostModel): number {
  const { measuredAt: _measuredAt, ...decisive } = model;
  return createHash('sha256').update(canonicalJson(decisive)).digest().readInt32LE(0);
}

/** The key with its world list sorted (the order worlds were measured in does not matter). */
function normalizeKey(key: CostModelKey): CostModelKey {
  return { ...key, worlds: [...key.worlds].sort((a, b) => a - b) };
}

/** JSON with object keys sorted, so equal values give equal text (and equal hashes). */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
