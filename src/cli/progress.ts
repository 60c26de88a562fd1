// Progress of long work (loading weights, writing checkpoints, profiling): a bar on a terminal; on
// anything else (a log file, CI), a line every 10% through `report`.
import { SingleBar } from 'cli-progress';

export type ProgressReport = (fields: Record<string, unknown>, message: string) => void;

/** A report that writes `eps-moe: <label> <done>/<total> <unit>` lines on stderr. */
export const stderrReport: ProgressReport = (fields, message) =>
  process.stderr.write(`eps-moe: ${message} ${fields.percent}% (${fields.done}/${fields.total} ${fields.unit})\n`);

export class ProgressView {
  private bar: SingleBar | null = null;
  private lastTenth = -1;

  /** `unit` 'MB' shows bytes as megabytes; any other unit shows counts as they are. */
  constructor(
    private readonly label: string,
    private readonly unit: string,
    private readonly report: ProgressReport = stderrReport,
  ) {}

  update(done: number, total: number, extra = ''): void {
    if (!(total > 0)) return;
    const show = (n: number): string => (this.unit === 'MB' ? (n / 1e6).toFixed(1) : String(Math.round(n)));
    if (process.stderr.isTTY) {
      if (!this.bar) {
        this.bar = new SingleBar({
          stream: process.stderr,
          format: `${this.label} [{bar}] {percentage}% | {shown}/{shownTotal} ${this.unit} {extra}`,
          hideCursor: true,
        });
        this.bar.start(total, 0, { shown: '0', shownTotal: show(total), extra });
      }
      this.bar.setTotal(total);
      this.bar.update(done, { shown: show(done), shownTotal: show(total), extra });
      return;
    }
    const tenth = Math.floor((10 * done) / total);
    if (tenth === this.lastTenth) return;
    this.lastTenth = tenth;
    this.report({ done: show(done), total: show(total), unit: this.unit, percent: tenth * 10, extra }, this.label);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
