// Draws a trace (the Chrome trace-event JSON that TraceCollector writes) as an SVG timeline: one row
// per (rank, track), each op a bar labelled with its name. For pictures in the docs; Perfetto
// (ui.perfetto.dev) is the tool for looking around in a trace.
import type { TraceEvent } from './traceEvents';

interface Bar {
  row: string;
  name: string;
  start: number;
  end: number;
  predicted: boolean;
}

const COLORS: Record<string, string> = {
  router: '#9e9e9e',
  permute: '#7986cb',
  dispatch: '#ef6c00',
  ffn: '#2e7d32',
  combine: '#c62828',
  unpermute: '#5c6bc0',
  shared: '#00897b',
};

function color(name: string): string {
  const key = Object.keys(COLORS).find((k) => name.startsWith(k));
  return key ? COLORS[key] : '#607d8b';
}

export function traceToSvg(events: readonly TraceEvent[], title: string): string {
  const names = new Map<string, string>();
  for (const e of events) {
    if (e.ph === 'M' && e.name === 'thread_name' && e.tid !== undefined)
      names.set(`${e.pid}/${e.tid}`, String((e.args as { name: string }).name));
  }
  const bars: Bar[] = [];
  for (const e of events) {
    if (e.ph !== 'X') continue;
    const track = names.get(`${e.pid}/${e.tid}`) ?? `tid ${e.tid}`;
    bars.push({
      row: `rank ${e.pid} ${track}`,
      name: e.name,
      start: e.ts / 1000,
      end: (e.ts + e.dur) / 1000,
      predicted: e.cat === 'predicted',
    });
  }
  const rows = [...new Set(bars.map((b) => b.row))].sort();
  const t0 = Math.min(...bars.map((b) => b.start));
  const t1 = Math.max(...bars.map((b) => b.end));
  const left = 190;
  const width = 1000;
  const rowH = 26;
  const top = 40;
  const x = (t: number) => left + ((t - t0) / (t1 - t0)) * (width - left - 10);
  const parts: string[] = [];
  parts.push(`<text x="10" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`);
  rows.forEach((row, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="10" y="${y + 17}" font-size="12">${escape(row)}</text>`);
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y + rowH - 2}" y2="${y + rowH - 2}" stroke="#eee"/>`);
  });
  for (const b of bars) {
    const y = top + rows.indexOf(b.row) * rowH + 3;
    const w = Math.max(1, x(b.end) - x(b.start));
    const opacity = b.predicted ? 0.45 : 0.9;
    parts.push(
      `<rect x="${x(b.start).toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${color(b.name)}" fill-opacity="${opacity}" rx="2"><title>${escape(b.name)} ${(b.end - b.start).toFixed(3)} ms</title></rect>`,
    );
    if (w > 38) parts.push(`<text x="${(x(b.start) + 3).toFixed(1)}" y="${y + 13}" font-size="10" fill="white">${escape(b.name)}</text>`);
  }
  const axisY = top + rows.length * rowH + 14;
  const step = niceStep((t1 - t0) / 8);
  for (let t = 0; t <= t1 - t0 + 1e-9; t += step) {
    parts.push(`<line x1="${x(t0 + t)}" x2="${x(t0 + t)}" y1="${top}" y2="${axisY - 10}" stroke="#ddd" stroke-dasharray="2,3"/>`);
    parts.push(`<text x="${x(t0 + t) - 8}" y="${axisY}" font-size="11">${+t.toFixed(2)} ms</text>`);
  }
  const height = axisY + 12;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`;
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
