// `eps-moe bench moe`: the EPS MoE-layer benchmark across ranks (src/bench/moe/).
import * as fs from 'fs';
import type { BackendKind } from '../native/addonTypes';
import type { DispatchMode } from '../moe/schedule';
import { formatMoeBench, runMoeBench } from '../bench/moe/moeBench';
import type { RoutingKind } from '../bench/moe/routing';
import { addon } from '../native/addon';
import { CliError } from './errors';

export interface MoeBenchCommandOptions {
  ranks: number;
  backend?: BackendKind;
  shapes?: string[];
  tokens?: number[];
  routings?: string[];
  reps?: number;
  json?: string;
  trace?: string;
  expertGroups?: number;
  /** --dispatch: what auto may use; unless pairs, baseline and fixed:1/2/4 are also measured with the dedup dispatch. */
  dispatch?: DispatchMode;
}

export async function moeBenchCommand(o: MoeBenchCommandOptions): Promise<void> {
  const routings = (o.routings ?? ['balanced', 'skewed']).map((r) => {
    if (r !== 'balanced' && r !== 'skewed') throw new CliError(`--routings: '${r}' is not balanced or skewed`);
    return r as RoutingKind;
  });
  const started = new Date().toISOString();
  const rows = await runMoeBench({ ...o, routings }, (line) => process.stderr.write(`eps-moe bench moe: ${line}\n`));
  const groups = o.expertGroups && o.expertGroups > 1 ? `, ${o.expertGroups} expert groups` : '';
  process.stdout.write(`## moe: one MoE layer on ${o.ranks} rank(s)${groups}\n${formatMoeBench(rows)}`);
  if (o.json)
    fs.writeFileSync(
      o.json,
      JSON.stringify(
        { date: started, suite: 'moe', ranks: o.ranks, expertGroups: o.expertGroups ?? 1, versions: addon().versions(), rows },
        null,
        1,
      ),
    );
}
