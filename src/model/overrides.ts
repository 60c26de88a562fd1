// `--override key=value`: changes to a config.json object before it is parsed, so that a full-size preset
// runs with fewer layers (num_hidden_layers=8) or another field changed, and the result is validated by
// parseModelConfig like any config.json. KEY is a field the config already has (dotted for nested objects:
// ffn_config.moe_top_k), or one of transformers' attribute_map aliases of the model type (DBRX:
// num_hidden_layers -> n_layers, hidden_size -> d_model, num_attention_heads -> n_heads,
// max_position_embeddings -> max_seq_len). VALUE is JSON (8, 1e-5, true, null, "yarn"); anything that is
// not JSON is taken as a string.
import { isJsonObject, type JsonObject } from './configFields';
import { ModelError } from './errors';

const ALIASES: Record<string, Record<string, string>> = {
  dbrx: { num_hidden_layers: 'n_layers', hidden_size: 'd_model', num_attention_heads: 'n_heads', max_position_embeddings: 'max_seq_len' },
};

export interface ConfigOverride {
  key: string;
  value: unknown;
}

function invalid(text: string, why: string): ModelError {
  return new ModelError('CONFIG_INVALID_OVERRIDE', `--override ${JSON.stringify(text)}: ${why}`);
}

/** Parses `key=value` (see the file comment); throws CONFIG_INVALID_OVERRIDE naming the argument. */
export function parseOverride(text: string): ConfigOverride {
  const eq = text.indexOf('=');
  if (eq <= 0) throw invalid(text, 'expected KEY=VALUE, e.g. num_hidden_layers=8');
  const key = text.slice(0, eq).trim();
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(key)) throw invalid(text, `"${key}" is not a field name`);
  const raw = text.slice(eq + 1).trim();
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  return { key, value };
}

/** A copy of `config` with the overrides applied in order; a key the config does not have is an error. */
export function applyOverrides(config: JsonObject, overrides: readonly ConfigOverride[], source = 'config'): JsonObject {
  const out = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  const modelType = typeof out['model_type'] === 'string' ? (out['model_type'] as string) : '';
  for (const { key, value } of overrides) {
    const path = key.split('.');
    path[0] = ALIASES[modelType]?.[path[0]] ?? path[0];
    let obj: Record<string, unknown> = out;
    for (const [i, part] of path.entries()) {
      if (!(part in obj)) {
        const known = Object.keys(obj).sort().join(', ');
        throw new ModelError(
          'CONFIG_INVALID_OVERRIDE',
          `--override ${key}: ${source} has no field "${path.slice(0, i + 1).join('.')}" (fields there: ${known})`,
        );
      }
      if (i === path.length - 1) {
        obj[part] = value;
      } else {
        const next = obj[part];
        if (!isJsonObject(next)) throw new ModelError('CONFIG_INVALID_OVERRIDE', `--override ${key}: "${path.slice(0, i + 1).join('.')}" is not an object`);
        obj = next as Record<string, unknown>;
      }
    }
  }
  return out;
}
