// Typed reads of config.json fields. Every failure names the file and the field, so a bad config is
// fixed from the message alone. `null` counts as absent: transformers writes null for "use the
// default" (head_dim, rope_scaling, sliding_window, ...).
import { ModelError } from './errors';

export type JsonObject = { readonly [key: string]: unknown };

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Upper bounds of the integer fields that size host arrays or loops before any weight is read, so that
 * a typo (num_hidden_layers: 1e9) is one line at once rather than a heap out of memory. The largest
 * published MoE models stay far below (DeepSeek-V3: 61 layers, 256 experts, 128 heads). Sizes that only
 * size tensors (vocab_size, hidden_size, intermediate sizes) are bounded by the memory estimate at load.
 */
export const FIELD_MAX: Readonly<Record<string, number>> = {
  num_hidden_layers: 4096,
  num_local_experts: 65536,
  num_experts: 65536,
  n_routed_experts: 65536,
  num_attention_heads: 65536,
  num_key_value_heads: 65536,
  head_dim: 65536,
};

export class ConfigFields {
  constructor(
    readonly json: JsonObject,
    /** The file the fields came from (for messages). */
    readonly source: string,
    /** Prefix for nested objects, e.g. "rope_parameters.". */
    readonly prefix = '',
  ) {}

  has(name: string): boolean {
    return this.json[name] !== undefined && this.json[name] !== null;
  }

  raw(name: string): unknown {
    const v = this.json[name];
    return v === null ? undefined : v;
  }

  missing(name: string, why = ''): ModelError {
    return new ModelError(
      'CONFIG_MISSING_FIELD',
      `${this.source}: required field "${this.prefix}${name}" is missing${why ? ` (${why})` : ''}`,
      this.source,
    );
  }

  invalid(name: string, expected: string): ModelError {
    return new ModelError(
      'CONFIG_INVALID_FIELD',
      `${this.source}: field "${this.prefix}${name}" must be ${expected}, got ${JSON.stringify(this.json[name])}`,
      this.source,
    );
  }

  /**
   * A positive integer (or >= min), at most FIELD_MAX[name] where the field sizes host arrays or loops.
   * Absent: the default, or an error when there is none.
   */
  int(name: string, opts: { default?: number; min?: number; why?: string } = {}): number {
    const min = opts.min ?? 1;
    const v = this.raw(name);
    if (v === undefined) {
      if (opts.default === undefined) throw this.missing(name, opts.why);
      return opts.default;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw this.invalid(name, min === 1 ? 'a positive integer' : `an integer >= ${min}`);
    }
    const max = FIELD_MAX[name];
    if (max !== undefined && v > max) throw this.invalid(name, `at most ${max} (no model comes near; the loader sizes arrays by it)`);
    return v;
  }

  /** A finite number > 0 (or >= 0 with allowZero). */
  positive(name: string, opts: { default?: number; allowZero?: boolean } = {}): number {
    const v = this.raw(name);
    if (v === undefined) {
      if (opts.default === undefined) throw this.missing(name);
      return opts.default;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (v === 0 && !opts.allowZero)) {
      throw this.invalid(name, opts.allowZero ? 'a finite number >= 0' : 'a finite number > 0');
    }
    return v;
  }

  optionalNumber(name: string): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.invalid(name, 'a finite number');
    return v;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') throw this.invalid(name, 'true or false');
    return v;
  }

  optionalString(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw this.invalid(name, 'a string');
    return v;
  }

  /** A list of integers >= 0 (absent: empty). */
  intList(name: string): number[] {
    const v = this.raw(name);
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
      throw this.invalid(name, 'a list of non-negative integers');
    }
    return v as number[];
  }

  /** A nested object (absent, null or {}: undefined). */
  object(name: string): ConfigFields | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (!isJsonObject(v)) throw this.invalid(name, 'an object or null');
    if (Object.keys(v).length === 0) return undefined;
    return new ConfigFields(v, this.source, `${this.prefix}${name}.`);
  }
}
