// The `eps-moe` command line. Each subcommand lives in its own file; this one only wires flags.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DISPATCH_MODES, parseMoeSchedule } from '../moe/schedule';
import { CliError, reportAndExit } from './errors';

function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return n;
  };
}

function nonNegativeInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return n;
  };
}

const SCHEDULE_HELP = 'auto | baseline | fixed:D[:grouped|dense|grouped_sm90][:tokens|experts] (experts: D chunks of expert groups)';

const expertGroupsOption = (what: string) =>
  new Option(
    '--expert-groups <G>',
    `groups of each rank's experts, the unit of the scheduler's expert axis (fixed:D:...:experts, auto)${what}; default 1`,
  ).argParser(positiveInt('--expert-groups'));

const dispatchOption = () =>
  new Option(
    '--dispatch <mode>',
    'how the MoE dispatch sends rows: pairs (once per token and expert), dedup (once per token and destination rank; token-axis plans with one expert group), auto (the auto schedule weighs both)',
  )
    .choices(DISPATCH_MODES)
    .default('auto');

const backendOption = () => new Option('--backend <kind>', 'cpu or cuda (default: cuda when the addon has it)').choices(['cpu', 'cuda']);

export function buildProgram(): Command {
  const program = new Command('eps-moe')
    .description('Distributed prefill of Mixture-of-Experts models with the EPS-MoE scheduler')
    .version(packageVersion(), '-V, --version', 'print the version (package.json) and the Node.js version')
    .showHelpAfterError(false)
    .configureOutput({ outputError: (str, write) => write(`eps-moe: ${str.replace(/^error: /, '').trim()}\n`) });

  program
    .command('make-model')
    .description('write a random checkpoint in the Hugging Face layout (config.json + safetensors)')
    .requiredOption('--preset <name>', 'model shape: one of the presets below')
    .requiredOption('--out <dir>', 'folder to write')
    .option('--seed <n>', 'random seed', nonNegativeInt('--seed'), 0)
    .addOption(new Option('--dtype <dtype>', 'weight dtype').choices(['bf16', 'f32']))
    .option('--override <key=value>', "change a field of the preset's config (repeatable), e.g. num_hidden_layers=8", collect, [])
    .addHelpText('after', () => `\nPresets:\n${require('./makeModel').presetHelp()}`)
    .action(async (opts) => {
      const { makeModelCommand } = await import('./makeModel');
      await makeModelCommand(opts);
    });

  program
    .command('forward')
    .description('run the forward of one process and print logits as JSON')
    .requiredOption('--model <dir>', 'Hugging Face checkpoint folder')
    .requiredOption('--input <file>', 'JSON {"sequences": [[token ids], ...]}')
    .addOption(backendOption())
    .option('--all-logits', 'logits for every position, not only the last')
    .option('--moe-schedule <schedule>', SCHEDULE_HELP, scheduleOption, 'auto')
    .addOption(expertGroupsOption(''))
    .addOption(dispatchOption())
    .option('--trace <file>', 'write a Chrome/Perfetto trace: attention and MoE ops as measured, MoE layers as predicted')
    .option('--check-weights', 'count NaN/Inf in every weight as it loads (on the device); fail naming the tensor')
    .option('--check-layers', "debug: also check every layer's MLP output, to name the layer where non-finite values start")
    .action(async (opts) => {
      const { forwardCommand } = await import('./forward');
      await forwardCommand(opts);
    });

  program
    .command('launch')
    .description('start a cluster (router + one rank per GPU, or N on the CPU) and serve Prefill over gRPC')
    .option('--model <dir>', 'Hugging Face checkpoint folder')
    .option('--preset <name>', 'a built-in model, made on first run into the cache folder (default: tiny)')
    .option('--ranks <n>', 'ranks on this node (default: GPUs visible; 1 on the CPU)', positiveInt('--ranks'))
    .addOption(backendOption())
    .option('--host <host>', 'address to serve on', '127.0.0.1')
    .option('--port <port>', 'port to serve on (0: any free port)', nonNegativeInt('--port'), 50051)
    .option('--nnodes <n>', 'nodes in the cluster', positiveInt('--nnodes'))
    .option('--node-rank <r>', 'this node (0 runs the router)', nonNegativeInt('--node-rank'))
    .option('--coordinator <host:port>', "node 0's rendezvous address (multi-node)")
    .option('--max-tokens-per-rank <n>', 'tokens one rank runs in one step', positiveInt('--max-tokens-per-rank'))
    .option('--max-wait-ms <n>', 'longest a request waits for a step to fill', nonNegativeInt('--max-wait-ms'))
    .option('--queue-limit <n>', 'sequences waiting at most (beyond: RESOURCE_EXHAUSTED)', positiveInt('--queue-limit'))
    .option('--max-sequences-per-request <n>', 'sequences in one request at most', positiveInt('--max-sequences-per-request'))
    .option('--step-timeout-ms <n>', 'a step slower than this fails the cluster', positiveInt('--step-timeout-ms'))
    .option(
      '--drain-timeout-ms <n>',
      'how long SIGINT/SIGTERM waits for admitted requests before everything stops (default 30000; a second signal stops at once)',
      nonNegativeInt('--drain-timeout-ms'),
    )
    .option(
      '--max-inflight-request-bytes <n>',
      'bytes of requests in the router at once, from decoding to answer; beyond: RESOURCE_EXHAUSTED before decoding (default 64 MiB)',
      positiveInt('--max-inflight-request-bytes'),
    )
    .option(
      '--cluster-secret-file <file>',
      'the secret every internal call carries (first line, >= 32 chars); required with --nnodes > 1, the same file on every node',
    )
    .option('--tls-cert <file>', 'PEM certificate: the public server serves TLS (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--tls-ca <file>',
      "PEM CA that signs every node's certificate: internal traffic (rendezvous, ranks, data plane) becomes mutual TLS",
    )
    .option('--api-key-file <file>', 'bearer tokens, one per line, that the public API requires (health probes need none)')
    .option(
      '--metrics-port <port>',
      'serve Prometheus metrics at http://HOST:PORT/metrics on --host (0: any free port)',
      nonNegativeInt('--metrics-port'),
    )
    .option(
      '--failure-linger-ms <n>',
      'how long a failed cluster answers NOT_SERVING before exiting',
      nonNegativeInt('--failure-linger-ms'),
    )
    .option('--moe-schedule <schedule>', SCHEDULE_HELP)
    .addOption(expertGroupsOption('; give every node the same G'))
    .addOption(dispatchOption())
    .option('--random-weights', "seeded random weights made on each rank's device from config.json alone (full-size benchmarks)")
    .option('--override <key=value>', "change a field of the preset's config (repeatable), e.g. num_hidden_layers=8", collect, [])
    .option('--trace <file>', "a Chrome/Perfetto trace of every step's attention and MoE ops (measured; MoE layers also predicted), written when the cluster stops")
    .option('--check-weights', 'count NaN/Inf in every weight as the ranks load it (on the device); fail naming the tensor')
    .option('--check-layers', "debug: also check every layer's MLP output, to name the layer where non-finite values start")
    .addOption(new Option('--log-level <level>', 'pino log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(async (opts) => {
      const { launchCommand } = await import('./launch');
      await launchCommand(opts);
    });

  program
    .command('prefill')
    .description('send prefill requests to a cluster; with --concurrency/--repeat, a load generator')
    .requiredOption('--server <host:port>', 'the cluster (eps-moe launch prints it)')
    .option('--tokens <ids>', 'one sequence: comma-separated token ids')
    .option('--text <text>', 'one sequence as text (the model folder needs tokenizer.json)')
    .option('--input <file>', 'JSON {"sequences": [[token ids], ...]}')
    .option('--top-logprobs <k>', 'log-probs to return per sequence', nonNegativeInt('--top-logprobs'), 5)
    .option('--json', 'print {"sequences": [{"next_token", "top_logprobs"}]} as JSON')
    .option('--concurrency <c>', 'load generator: requests in flight', positiveInt('--concurrency'))
    .option('--repeat <r>', 'load generator: requests in all', positiveInt('--repeat'))
    .option('--timeout-ms <ms>', 'deadline of each request', positiveInt('--timeout-ms'))
    .option('--api-key-file <file>', "the server's API keys file: the first key is sent as a bearer token")
    .option('--tls-ca <file>', 'PEM of the CA (or self-signed certificate) of a server launched with --tls-cert: connect over TLS')
    .option('--allow-failures', 'load generator: exit 0 when some requests fail (by default any failure exits 1)')
    .action(async (opts) => {
      const { prefillCommand } = await import('./prefill');
      await prefillCommand(opts);
    });

  program
    .command('status')
    .description("a cluster's health, model, ranks and per-layer MoE metrics (no grpcurl needed)")
    .requiredOption('--server <host:port>', 'the cluster (eps-moe launch prints it)')
    .option('--json', 'print {"health", "model", "metrics"} as JSON')
    .option('--timeout-ms <ms>', 'deadline of each call', positiveInt('--timeout-ms'), 5000)
    .option('--api-key-file <file>', "the server's API keys file: the first key is sent as a bearer token")
    .option('--tls-ca <file>', 'PEM of the CA (or self-signed certificate) of a server launched with --tls-cert')
    .action(async (opts) => {
      const { statusCommand } = await import('./status');
      await statusCommand(opts);
    });

  program
    .command('profile')
    .description("measure the EPS scheduler's cost model for a model's MoE layer on this machine (saved in the cache folder)")
    .requiredOption('--model <dir>', 'Hugging Face checkpoint folder (only config.json is read)')
    .addOption(backendOption())
    .option('--ranks <n>', 'ranks (in-process on the CPU; on GPUs launch measures several ranks itself)', positiveInt('--ranks'))
    .action(async (opts) => {
      const { profileCommand } = await import('./profile');
      await profileCommand(opts);
    });

  program
    .command('bench')
    .description('measure GEMM, expert GEMM (grouped vs dense), attention and whole-model prefill on one device')
    .argument(
      '[suite...]',
      'gemm, experts, attention, prefill (default: every suite that fits on the device), or moe (alone: one MoE layer across ranks)',
    )
    .addOption(backendOption())
    .option('--json <file>', 'also write the results as JSON')
    .option('--quick', 'small shapes, seconds per suite (always on with the CPU backend)')
    .option('--reps <n>', 'timed repetitions per measurement; the median is reported (default 20, quick 5)', positiveInt('--reps'))
    .option('--moe-schedule <schedule>', `MoE schedule of the prefill suite: ${SCHEDULE_HELP}`, scheduleOption, 'auto')
    .option('--preset <name>', 'prefill suite: the model, a preset (default: mixtral-8x7b on GPUs, tiny-mixtral on the CPU)')
    .option(
      '--override <key=value>',
      "prefill suite: change a field of the preset's config (repeatable), e.g. num_hidden_layers=8",
      collect,
      [],
    )
    .option('--ranks <n>', 'moe suite: ranks (GPUs; in-process ranks on the CPU)', positiveInt('--ranks'), 2)
    .option('--shapes <names>', 'moe suite: layer shapes, comma-separated (deepseek-v2, mixtral-8x7b, qwen3-30b-a3b)', list)
    .option('--tokens <n,...>', 'moe suite: tokens per rank, comma-separated', (v: string) => list(v).map(positiveInt('--tokens')))
    .addOption(new Option('--routings <kinds>', 'moe suite: balanced, skewed').argParser(list))
    .option(
      '--trace <file>',
      'moe suite: write a Chrome/Perfetto trace of one layer under baseline, fixed:1:dense+dedup and auto, one after the other (the first shape, balanced, 16K tokens per rank or else the first --tokens)',
    )
    .addOption(expertGroupsOption(' of the moe suite, which then also sweeps fixed plans of the expert axis'))
    .addOption(dispatchOption())
    .action(async (suites: string[], opts) => {
      if (suites.includes('moe')) {
        if (suites.length > 1) throw new CliError('run the moe suite on its own: eps-moe bench moe [--ranks N]');
        const { moeBenchCommand } = await import('./benchMoe');
        await moeBenchCommand(opts);
        return;
      }
      const { benchCommand } = await import('./bench');
      await benchCommand({ ...opts, suites });
    });

  return program;
}

/** "eps-moe 0.1.0 (node v20.20.2, napi 9)": package.json's version, found from src/cli or dist/cli alike. */
function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return `eps-moe ${pkg.version} (node ${process.version}, napi ${process.versions.napi})`;
}

/** A repeatable option's values, in order. */
function collect(v: string, previous: string[]): string[] {
  return [...previous, v];
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}

/** Checks --moe-schedule at parse time (the commands parse it again into a MoeSchedule). */
function scheduleOption(v: string): string {
  try {
    parseMoeSchedule(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message.replace(/^--moe-schedule "[^"]*": /, ''));
  }
  return v;
}

export async function main(argv: string[]): Promise<void> {
  // A reader that stops early (`| head`) is not an error of ours.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    reportAndExit(e);
  });
  const program = buildProgram();
  program.exitOverride((err) => {
    // commander already printed its one-line message
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CliError || e instanceof Error) reportAndExit(e);
    reportAndExit(new Error(String(e)));
  }
}

export { positiveInt };
