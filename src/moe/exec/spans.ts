import type { Event } from '../../native/device';

/** One op as it ran: events recorded on its stream before and after it (resolved after the step). */
export interface OpSpan {
  stream: 'compute' | 'comm';
  name: string;
  start: Event;
  end: Event;
  args: Record<string, string | number>;
}
