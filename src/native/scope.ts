// Tensors made for one step, disposed together when the step ends. Ops hold their inputs alive
// natively until they have run, so disposing right after enqueueing is safe.
import type { Device, Tensor } from './device';
import type { DType } from './addonTypes';

export class TensorScope {
  private readonly owned: Tensor[] = [];

  constructor(readonly device: Device) {}

  tensor(dtype: DType, shape: readonly number[]): Tensor {
    const t = this.device.tensor(dtype, shape);
    this.owned.push(t);
    return t;
  }

  adopt<T extends Tensor>(t: T): T {
    this.owned.push(t);
    return t;
  }

  dispose(): void {
    for (const t of this.owned.splice(0)) t.dispose();
  }
}
