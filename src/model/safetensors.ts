// The safetensors format (https://github.com/huggingface/safetensors): 8 bytes little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the data; offsets are relative to the first byte after the header. This file holds the
// format itself (dtypes, header parse and validation, header encoding); reading and writing live in
// safetensorsReader.ts and safetensorsWriter.ts.
import type { DType } from '../native/addonTypes';
import { ModelError } from './errors';

/** Bytes per element of every byte-aligned safetensors dtype. */
const SAFETENSORS_DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** The safetensors dtypes the engine takes, and their addon names. */
const TO_ENGINE_DTYPE: Record<string, DType> = { F32: 'f32', BF16: 'bf16', F16: 'f16', I32: 'i32', I64: 'i64' };
const FROM_ENGINE_DTYPE: Record<DType, string> = { f32: 'F32', bf16: 'BF16', f16: 'F16', i32: 'I32', i64: 'I64' };

export function dtypeBytes(dtype: DType): number {
  return SAFETENSORS_DTYPE_BYTES[FROM_ENGINE_DTYPE[dtype]];
}

export function toSafetensorsDType(dtype: DType): string {
  return FROM_ENGINE_DTYPE[dtype];
}

/** The engine dtype of a safetensors dtype string, or undefined for one it does not take (U8, F64...). */
export function engineDType(safetensorsDType: string): DType | undefined {
  return TO_ENGINE_DTYPE[safetensorsDType];
}

/** One tensor's entry in a header; offsets are absolute file positions. */
export interface TensorEntry {
  name: string;
  /** The safetensors dtype string (F32, BF16, ...). */
  dtype: string;
  shape: number[];
  /** Absolute byte position of the first element in the file. */
  start: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  /** Bytes before the data: 8 + header length. */
  dataStart: number;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Safetensors refuses headers over 100 MB; so do we, before allocating. */
export const MAX_HEADER_BYTES = 100_000_000;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function bad(file: string, problem: string): ModelError {
  return new ModelError('SAFETENSORS_BAD_HEADER', `${file}: bad safetensors header: ${problem}`, file);
}

/** Reads the 8-byte length prefix; `fileSize` bounds it. Returns the JSON length. */
export function parseHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new ModelError(
      'SAFETENSORS_TRUNCATED',
      `${file}: truncated safetensors file: ${fileSize} bytes, the header length alone takes 8`,
      file,
    );
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = Number(view.getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES) throw bad(file, `header length ${n} exceeds ${MAX_HEADER_BYTES} bytes`);
  if (8 + n > fileSize) {
    throw new ModelError(
      'SAFETENSORS_TRUNCATED',
      `${file}: truncated safetensors header: it declares ${n} bytes but the file has ${fileSize - 8} after the length`,
      file,
    );
  }
  return n;
}

/** Parses and validates the JSON header against the file size. */
export function parseHeaderJson(jsonBytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const dataStart = 8 + jsonBytes.length;
  const dataBytes = fileSize - dataStart;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(jsonBytes.buffer, jsonBytes.byteOffset, jsonBytes.length).toString('utf8'));
  } catch (e) {
    throw bad(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw bad(file, 'the header is not a JSON object');
  }
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      // Ignored by the engine; kept for tools. Safetensors defines it as string -> string.
      if (typeof raw === 'object' && raw !== null) metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== 'object' || raw === null) throw bad(file, `entry "${name}" is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string') throw bad(file, `tensor "${name}" has no dtype string`);
    const elemBytes = SAFETENSORS_DTYPE_BYTES[dtype];
    if (elemBytes === undefined) {
      throw new ModelError(
        'SAFETENSORS_UNKNOWN_DTYPE',
        `${file}: tensor "${name}" has unknown dtype "${dtype}" (known: ${Object.keys(SAFETENSORS_DTYPE_BYTES).join(', ')})`,
        file,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw bad(file, `tensor "${name}" has shape ${JSON.stringify(shape)}, not a list of non-negative integers`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw bad(file, `tensor "${name}" has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataBytes) {
      throw new ModelError(
        'SAFETENSORS_OUT_OF_BOUNDS',
        `${file}: tensor "${name}" data_offsets [${begin}, ${end}] reach past the end of the file (${dataBytes} data bytes)`,
        file,
      );
    }
    const expected = numel(shape as number[]) * elemBytes;
    if (end - begin !== expected) {
      throw new ModelError(
        'SAFETENSORS_SHAPE_MISMATCH',
        `${file}: tensor "${name}" is ${dtype}[${(shape as number[]).join(', ')}] = ${expected} bytes but data_offsets span ${end - begin}`,
        file,
      );
    }
    tensors.set(name, { name, dtype, shape: shape as number[], start: dataStart + begin, byteLength: end - begin });
  }
  return { dataStart, tensors, metadata };
}

/** A tensor to be written: name, engine dtype and shape. */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * The header bytes (length prefix + JSON padded with spaces to a multiple of 8, as the reference
 * writer does) for tensors laid out back to back in the given order.
 */
export function encodeHeader(tensors: readonly TensorSpec[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) {
      throw new ModelError('SAFETENSORS_WRITE', `tensor name "${t.name}" is reserved or repeated`);
    }
    const bytes = numel(t.shape) * dtypeBytes(t.dtype);
    header[t.name] = { dtype: toSafetensorsDType(t.dtype), shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

/** Total data bytes of tensors. */
export function tensorBytes(t: Pick<TensorSpec, 'dtype' | 'shape'>): number {
  return numel(t.shape) * dtypeBytes(t.dtype);
}
