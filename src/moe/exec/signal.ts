// An event plus a promise that resolves once the event has been recorded, so that a stream can wait for
// work another async chain has not enqueued yet (the executors' two chains, one per stream).
import type { Event, Stream } from '../../native/device';

export class Signal {
  event?: Event;
  readonly recorded: Promise<void>;
  private resolve!: () => void;
  private owned = true;
  constructor() {
    this.recorded = new Promise((r) => (this.resolve = r));
  }
  record(s: Stream): void {
    this.set(s.record());
  }
  /** Takes an event recorded elsewhere (owned by the caller: dispose does not free it). */
  set(event: Event): void {
    this.event = event;
    this.owned = false;
    this.resolve();
  }
  /** Makes `s` wait for the event, once it has been recorded. */
  async waitOn(s: Stream): Promise<void> {
    await this.recorded;
    s.wait(this.event!);
  }
  dispose(): void {
    if (this.owned) this.event?.dispose();
  }
}
