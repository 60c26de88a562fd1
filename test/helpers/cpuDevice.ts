// The CPU device of an op test file: one device and stream for the file, and the tensors a test
// made, disposed after each test (once the stream has run everything that reads them).
import { Device, type Stream, type Tensor } from '../../src/native/device';

export interface CpuTestDevice {
  device: Device;
  stream: Stream;
  /** Disposes `t` after the current test. */
  keep<T extends Tensor>(t: T): T;
}

export function cpuTestDevice(): CpuTestDevice {
  const device = Device.open('cpu');
  const stream = device.stream();
  const made: Tensor[] = [];
  afterEach(async () => {
    await stream.synchronize();
    for (const t of made.splice(0)) t.dispose();
  });
  afterAll(() => {
    stream.dispose();
    device.dispose();
  });
  return {
    device,
    stream,
    keep: (t) => {
      made.push(t);
      return t;
    },
  };
}
