// Writes NaN into one tensor of a safetensors checkpoint in place (tests of non-finite weights): reads the
// file's header (8-byte little-endian length, then JSON) and overwrites the tensor's first `count` values.
import * as fs from 'fs';

/** Puts NaN (or `value`) into the first `count` elements of tensor `name` of the safetensors file `file`. */
export function poisonTensor(file: string, name: string, count = 1, value = NaN): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const len = Buffer.alloc(8);
    fs.readSync(fd, len, 0, 8, 0);
    const headerLen = Number(len.readBigUInt64LE(0));
    const header = Buffer.alloc(headerLen);
    fs.readSync(fd, header, 0, headerLen, 8);
    const entry = (JSON.parse(header.toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>)[name];
    if (!entry) throw new Error(`${file} has no tensor ${name}`);
    const size = entry.dtype === 'F32' ? 4 : 2;
    const bytes = Buffer.alloc(count * size);
    for (let i = 0; i < count; i++) {
      if (entry.dtype === 'F32') bytes.writeFloatLE(value, i * 4);
      else if (entry.dtype === 'BF16') {
        const f = Buffer.alloc(4);
        f.writeFloatLE(value, 0);
        bytes.writeUInt16LE(Number.isNaN(value) ? 0x7fc0 : f.readUInt16LE(2), i * 2);
      } else throw new Error(`poisonTensor: dtype ${entry.dtype} not handled`);
    }
    fs.writeSync(fd, bytes, 0, bytes.length, 8 + headerLen + entry.data_offsets[0]);
  } finally {
    fs.closeSync(fd);
  }
}
