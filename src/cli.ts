// The command line: flags (defaults from options.ts), output mode, exit codes.
import { Command, CommanderError, Help, Option } from 'commander';
import chalk from 'chalk';
import os from 'node:os';
import { packageVersion } from './version.js';
import { bashCompletion } from './completion.js';
import { manPage } from './manpage.js';
import { cloneOption, groupedHelp } from './help.js';
import {
  DEFAULTS,
  type FailoverOptions,
  type Options,
  PRE_DUMP_MODES,
  type RawOptions,
  type RawReplicaOptions,
  type ReplicaOptions,
  resolveFailoverOptions,
  resolveOptions,
  resolveReplicaOptions,
  TRANSPORT_ALIASES,
  TRANSPORTS,
} from './options.js';
import { failover } from './migration/replica/failover.js';
import { type ReplicaEvent, replicate } from './migration/replica/replicate.js';
import { EXIT, MigrateError, UsageError } from './errors.js';
import { Progress } from './progress.js';
import { humanError, humanSummary, toJson, type Report } from './report.js';
import { interruption, migrate } from './migration/migrate.js';
import { faultsFrom } from './migration/faults.js';
import { recoverCommand } from './migration/recover/recover.js';

const EXIT_HELP = `
Exit codes:
  ${EXIT.OK}    migrated (or --dry-run: preflight passed)
  ${EXIT.INTERNAL}    internal error (a bug; please report it with --verbose output)
  ${EXIT.USAGE}    bad usage: nothing was contacted or changed
  ${EXIT.PREFLIGHT}    refused before the freeze: the container runs untouched on the source
  ${EXIT.ROLLED_BACK}    failed after the freeze and rolled back: the container runs on the source
  ${EXIT.UNSAFE}    failed and the rollback was not confirmed, or the migration is in doubt:
       the message says which host may hold what (in doubt: run migrate recover)
  ${EXIT.INTERRUPTED}  interrupted (SIGINT/SIGTERM) before the freeze: it runs on the source

Examples:
  migrate --dry-run web1 root@10.0.0.2   (checks both hosts, prints the plan)
  migrate web1 root@10.0.0.2
  migrate --runc-root /run/containerd/runc/k8s.io db 10.0.0.2:2222 -i ~/.ssh/key
  migrate --move-ip 10.0.1.10/32 --json echo dst-host > report.json
  migrate recover web1 root@10.0.0.2     (after a killed migration)
`;

const RECOVER_EXIT_HELP = `
Exit codes:
  ${EXIT.OK}    settled (the report says where the container runs), or nothing to recover
  ${EXIT.INTERNAL}    internal error (a bug; please report it with --verbose output)
  ${EXIT.USAGE}    bad usage
  ${EXIT.PREFLIGHT}    the migration is still running (its tool is alive): nothing was touched
  ${EXIT.UNSAFE}    still in doubt (the destination could not be asked): run it again once it can be reached,
       or the container could not be brought to one host (the message says what to do)

Example:
  migrate recover web1 root@10.0.0.2
`;

/** The connection's, runc's and CRIU's, and the output's flags: what recover's help shows, and what replicate and failover share with a migration. */
const CONNECTION = [
  '--identity',
  '--known-hosts',
  '--accept-new-host-key',
  '--ssh-config',
  '--connect-timeout',
  '--sudo',
  '--runc-root',
  '--remote-runc-root',
  '--runc',
  '--remote-runc',
  '--criu',
  '--remote-criu',
  '--json',
  '--no-color',
  '--quiet',
  '--verbose',
];

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function buildProgram(): Command {
  const p = new Command('migrate')
    .description('Live-migrate a running runc container to another Linux host over SSH, with CRIU.')
    .argument('<container>', 'the container, as named by runc list on this host')
    .argument('<host>', 'the destination: [user@]host[:port] or a Host alias from ~/.ssh/config')
    .option(
      '-i, --identity <file>',
      'SSH private key (repeatable); default: ssh-agent, ssh config IdentityFile, ~/.ssh/id_{ed25519,ecdsa,rsa}',
      collect,
    )
    .option(
      '--known-hosts <file>',
      `the known_hosts file the destination key is checked against and new keys go to (default: ssh config's UserKnownHostsFile, else ${DEFAULTS.knownHostsFiles.join(' ')}; ${DEFAULTS.globalKnownHostsFiles.join(' ')} are read too)`,
    )
    .option(
      '--accept-new-host-key',
      'record the key of a host with no known_hosts entry of any kind (never a changed, revoked or CA-covered one), as StrictHostKeyChecking=accept-new',
      false,
    )
    .option('--ssh-config <file>', 'ssh_config for host aliases', DEFAULTS.sshConfig)
    .option('--connect-timeout <seconds>', 'SSH connection timeout', String(DEFAULTS.connectTimeoutMs / 1000))
    .option('--sudo', 'run remote commands through passwordless sudo (non-root remote user)', false)
    .option('--runc-root <dir>', 'runc state root on the source', DEFAULTS.runcRoot)
    .option('--remote-runc-root <dir>', 'runc state root on the destination', DEFAULTS.remoteRuncRoot)
    .option('--runc <path>', 'runc binary on the source', DEFAULTS.runc)
    .option('--remote-runc <path>', 'runc binary on the destination', DEFAULTS.runc)
    .option('--criu <path>', 'criu binary on the source', DEFAULTS.criu)
    .option('--remote-criu <path>', 'criu binary on the destination', DEFAULTS.criu)
    .option(
      '--bundle <dir>',
      "the container's bundle on the destination (default: the source bundle's path, from runc state)",
    )
    .option('--diskless', `keep images in memory: work directories on tmpfs (${DEFAULTS.disklessWorkDir}) (default)`)
    .option('--no-diskless', `write images to disk: work directories in ${DEFAULTS.diskWorkDir}`)
    .option(
      '--work-dir <dir>',
      `where the source's private work directory is made (default: ${DEFAULTS.disklessWorkDir}, or ${DEFAULTS.diskWorkDir} with --no-diskless)`,
    )
    .option('--remote-work-dir <dir>', "where the destination's private work directory is made (same defaults)")
    .addOption(
      new Option(
        '--transport <how>',
        `how memory pages travel: tls (CRIU's page server on the destination's address, mutual TLS with certificates made for this migration), tunnel (the page server reached through the SSH connection; page-server is its former name), stream (dump locally, tar over SSH), direct (page server over plain TCP, trusted networks only), auto (stream below ${DEFAULTS.autoStreamMaxBytes / 1048576} MiB of container memory in one shot, else tls where both CRIUs have it and the source reaches the destination's address, else tunnel)`,
      )
        .choices([...TRANSPORTS, ...Object.keys(TRANSPORT_ALIASES)])
        .default(DEFAULTS.transport),
    )
    .option(
      '--iterative',
      'pre-copy memory while the container runs, then freeze (default when the source kernel tracks dirty memory; refuses if it does not)',
    )
    .option('--one-shot', 'no pre-copy: freeze once and move all memory during the freeze')
    .option(
      '--max-downtime <ms>',
      'pre-copy stop rule: switch over once the predicted downtime is at most this',
      String(DEFAULTS.maxDowntimeMs),
    )
    .option(
      '--threshold <size|pct>',
      'pre-copy stop rule instead of --max-downtime: switch over once an iteration writes less than SIZE (16M) or PCT of the first (10%)',
    )
    .option(
      '--max-iterations <n>',
      'pre-copy: at most this many iterations before the switchover',
      String(DEFAULTS.maxIterations),
    )
    .option(
      '--auto-converge',
      "pre-copy: when memory is dirtied at half the transfer rate or more, throttle the container's CPU (cgroup quota): 20 %, then 10 % more each iteration, at most 99 %; lifted at the switchover and on every exit",
    )
    .addOption(
      new Option(
        '--pre-dump-mode <mode>',
        'pre-copy: how pre-dumps read memory: splice (while the tasks are frozen) or read (process_vm_readv after they run again)',
      )
        .choices([...PRE_DUMP_MODES])
        .default(DEFAULTS.preDumpMode),
    )
    .option(
      '--post-copy',
      "post-copy (CRIU's lazy pages): freeze, move only what is not memory, restore at once on the destination, then move the memory while it runs (fetched on demand and pushed). The downtime no longer grows with memory; in exchange, until the last page arrives (the lazy window) the container needs both hosts: if the link or the destination fails then, the source resumes and what the destination did in the window is lost (its TCP peers are reset). Needs CRIU's TLS on both hosts",
    )
    .option(
      '--hybrid',
      "pre-copy under the stop rule while it runs, then post-copy for what is left: the freeze moves no memory and the lazy window moves only what changed since the last pre-dump. Needs dirty-memory tracking on the source (refused without it) and CRIU's TLS on both hosts",
    )
    .option(
      '--post-copy-shared-ok',
      'post-copy: go on although a directory of the container is storage both hosts share; a broken lazy window then resumes a source older than what the copy wrote there',
    )
    .option(
      '--tune-sysctl',
      `post-copy: raise fs.pipe-max-size to ${DEFAULTS.lazyPipeMaxBytes} where it is lower (on either host), and put it back after`,
    )
    .option(
      '--page-server-port <port>',
      'TCP port of the page server (on the destination; with --post-copy, on the source)',
      String(DEFAULTS.pageServerPort),
    )
    .option('--tcp-established', 'migrate established TCP connections (default)')
    .option('--no-tcp-established', 'do not migrate TCP connections (the dump fails if there are any)')
    .option(
      '--move-ip <addr/prefix[@dev]>',
      "move the service IPv4 address the container's peers use: removed on the source after the dump, added on the destination before the restore, announced by gratuitous ARP",
    )
    .option(
      '--sync-rootfs',
      "sync the container's root filesystem to the destination: while it runs, then what changed, while it is frozen (default)",
    )
    .option(
      '--no-sync-rootfs',
      'do not sync the root filesystem (shared storage, or a copy you keep identical yourself)',
    )
    .option(
      '--sync-volume <path>',
      'also sync this bind mount (its path in the container or on the host; repeatable)',
      collect,
    )
    .option(
      '--verify-files',
      'after the final delta, compare the synced trees (contents and metadata) while frozen; a difference rolls back (costs a read of every file on both hosts)',
    )
    .option(
      '--replica-dir <dir>',
      "where migrate replicate keeps replicas on its standby: a migration to that host starts from this container's (and stops its replicate)",
      DEFAULTS.replicaDir,
    )
    .option(
      '--hold-timeout <seconds>',
      `how long the frozen source waits for the verdict before it resumes by itself (default: ${DEFAULTS.holdFloorS} s, or more for a large container)`,
    )
    .option('--json', 'print one JSON report on stdout and nothing else', false)
    .option('--no-color', 'no colours (also when NO_COLOR is set)')
    .option('-q, --quiet', 'print nothing but errors (and the summary unless --json)', false)
    .option('-v, --verbose', 'print every local and remote command as it runs', false)
    .option('-n, --dry-run', 'connect, run the preflight checks and print the plan; freeze and change nothing', false)
    .option(
      '--force',
      'skip the preflight checks that can be skipped (criu check, CPU compatibility, open files, free space); says which',
      false,
    )
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .addHelpText('after', EXIT_HELP)
    .showHelpAfterError('(run migrate --help for every option)')
    .exitOverride()
    // migrate a b c: the c is a mistake, not something to ignore.
    .allowExcessArguments(false)
    .helpCommand('help [command]', 'show the help of a command (migrate help recover)')
    // Options after a subcommand's name are the subcommand's (recover takes the same ones).
    .enablePositionalOptions();
  p.configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) });
  // The main command's flags, grouped (help.ts); the subcommands keep commander's list.
  p.configureHelp({
    // (helper.formatHelp is this function: commander's own is called for the others.)
    formatHelp: (cmd, helper) =>
      cmd === p ? groupedHelp(cmd, helper) : Help.prototype.formatHelp.call(helper, cmd, helper),
  });
  // Subcommands come after exitOverride and configureOutput, which they inherit.
  // recover takes the same options as a migration (SSH, runc roots): the same definitions.
  const rec = p
    .command('recover')
    .description('settle a migration whose tool died: ask the destination, then finish it or resume the source')
    .argument('<container>', 'the container, as named by runc on this host')
    .argument('<host>', 'the destination of the unfinished migration');
  // recover accepts every flag of the migration it settles (the post-copy watchdog runs it
  // with the migration's own command line), but its help shows only those it uses.
  for (const o of p.options) {
    if (['--version', '--dry-run'].includes(o.long ?? '')) continue;
    if (CONNECTION.includes(o.long ?? '')) rec.addOption(o);
    else rec.addOption(cloneOption(o).hideHelp());
  }
  rec.addHelpText('after', RECOVER_EXIT_HELP);
  rec.option(
    '--resume-source',
    'the destination committed and its copy is lost (recover said so): resume the frozen source; what the copy did after its commit is lost',
    false,
  );
  // replicate and failover: the connection's, runc's and the output's options, as a migration's.
  const shared = (c: Command, names: string[]) => {
    for (const o of p.options) if (names.includes(o.long ?? '')) c.addOption(o);
  };
  const replicaDir = `the replicas' directory on the standby (one per container)`;
  const rep = p
    .command('replicate')
    .description(
      'keep restorable checkpoints of a running container on a standby host, and a lease that fences it, until stopped (SIGINT/SIGTERM) or --for',
    )
    .argument('<container>', 'the container, as named by runc on this host')
    .argument('<host>', 'the standby: [user@]host[:port] or a Host alias');
  shared(rep, [
    ...CONNECTION,
    '--bundle',
    '--diskless',
    '--no-diskless',
    '--work-dir',
    '--remote-work-dir',
    '--tcp-established',
    '--no-tcp-established',
    '--force',
  ]);
  rep
    .option(
      '--interval <duration>',
      'a checkpoint and a lease renewal this often (5s, 500ms, 1m)',
      `${DEFAULTS.replicaIntervalMs / 1000}s`,
    )
    .option(
      '--chain-length <n>',
      'where the kernel tracks dirty memory: a restorable checkpoint every N intervals, pre-dumps (only what changed) between',
      String(DEFAULTS.replicaChainLength),
    )
    .option('--keep <n>', 'complete checkpoints kept on the standby', String(DEFAULTS.replicaKeep))
    .option(
      '--lease <duration>',
      `how long a renewal holds off failover (default: ${DEFAULTS.leaseIntervals} intervals and ${DEFAULTS.leaseSlackMs / 1000} s)`,
    )
    .addOption(
      new Option(
        '--fence <mode>',
        'freeze: pause the container here when the lease cannot be renewed in time (failover is then safe once it expires); none: never (failover then needs --source or --force)',
      )
        .choices(['freeze', 'none'])
        .default('freeze'),
    )
    .option('--for <duration>', 'stop by itself after this long')
    .option(
      '--trigger-socket <path>',
      'make a unix datagram socket here (its directory bind-mounted into the container): CHECKPOINT asks for a checkpoint now, MIGRATE for a migration to the standby',
    )
    .option('--replica-dir <dir>', replicaDir, DEFAULTS.replicaDir);
  const fo = p
    .command('failover')
    .description(
      "restore the standby's latest complete checkpoint once the source has stopped (its lease expired, or --source/--force)",
    )
    .argument('<container>', 'the container')
    .argument('<host>', 'the standby: [user@]host[:port], a Host alias, or local when run on the standby');
  shared(fo, [...CONNECTION, '--remote-work-dir']);
  fo.option(
    '--force',
    'restore although nothing confirms that the source stopped (no expired lease of a fencing replicate, no --source): two copies may run',
    false,
  )
    .option(
      '--move-ip <addr/prefix[@dev]>',
      'put the service IPv4 address on the standby before the restore (taken off the source when --source reaches it), announced by gratuitous ARP once the container runs',
    )
    .option(
      '--watch',
      'wait for the lease to expire, then fail over (the automatic mode, for a unit on the standby)',
      false,
    )
    .option(
      '--source <host>',
      'the source to check over SSH: the container is stopped there if it runs; then no expired lease is needed',
    )
    .option('--replica-dir <dir>', replicaDir, DEFAULTS.replicaDir);
  p.command('completion')
    .description('print a shell completion script: eval "$(migrate completion bash)"')
    .argument('<shell>', 'the shell (bash)')
    .action((shell: string) => {
      if (shell !== 'bash')
        throw new UsageError(
          `no completion for "${shell}": only bash is supported`,
          'Run: eval "$(migrate completion bash)"',
        );
      process.stdout.write(bashCompletion(p));
    });
  p.command('man')
    .description('print the manual page, migrate(1), made from these definitions')
    .action(() => {
      process.stdout.write(manPage(p, packageVersion(), EXIT_HELP));
    });
  // Help shows defaults as values: "(default: 300)", not "(default: \"300\")", and no
  // "(default: false)" on every switch (an unset switch is off).
  for (const cmd of [p, ...p.commands])
    for (const o of cmd.options) {
      if (o.defaultValue === false) o.default(undefined);
      else if (typeof o.defaultValue === 'string' && o.defaultValueDescription === undefined)
        o.defaultValueDescription = o.defaultValue;
    }
  return p;
}

function installSignalHandlers(progress: Progress): void {
  let count = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    count++;
    progress.notice(
      count === 1
        ? `${sig} received: stopping before the freeze, or finishing the switchover if it has begun (the container must end on exactly one host)`
        : `${sig} again: still finishing safely; the container is never left half-way`,
    );
    interruption.request(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A terminal that closes: the same as SIGTERM, and nothing more is written to it (a
  // write to a hung-up terminal fails, and must not end the tool mid-switchover).
  process.on('SIGHUP', (sig) => {
    const ignore = () => undefined;
    process.stdout.on('error', ignore);
    process.stderr.on('error', ignore);
    progress.mute();
    onSignal(sig);
  });
}

/** The flags given on the command line (not defaults), as --long names. */
function givenFlags(cmd: Command): string[] {
  return cmd.options.flatMap((o) => (cmd.getOptionValueSource(o.attributeName()) === 'cli' && o.long ? [o.long] : []));
}

/**
 * What an ssh user types that migrate spells otherwise: the hint for an unknown option.
 * (commander's message names the option in quotes.)
 */
export function sshHabitHint(message: string): string | undefined {
  // A short option's value may be joined to it, as ssh takes it (-p2222, -Jjump).
  const opt = message.match(/unknown option '(-[^-'][^']*)'/)?.[1]?.slice(0, 2);
  if (opt === '-p')
    return 'The port goes with the host: migrate CONTAINER [user@]host:PORT (or Port in ~/.ssh/config).';
  if (opt === '-J') return "Jump hosts come from ~/.ssh/config: ProxyJump in the destination's Host block.";
  if (opt === '-F') return 'The ssh_config file: --ssh-config FILE.';
  if (opt === '-l') return 'The user goes with the host: migrate CONTAINER user@host.';
  if (opt === '-o')
    return 'ssh options come from ~/.ssh/config (--ssh-config FILE); -i and --known-hosts are flags of their own.';
  return undefined;
}

/**
 * Colour only on a terminal, and not with NO_COLOR (set and not empty, as no-color.org
 * says) or --no-color; decided before the command line is parsed, so that its own errors
 * follow it too.
 */
export function wantsColour(argv: string[], env: NodeJS.ProcessEnv, tty: boolean): boolean {
  return tty && !env.NO_COLOR && !flagIn(argv, '--no-color');
}

/** Whether FLAG is on the command line (before a --), looked for by hand: for what must be known when it cannot be parsed. */
function flagIn(argv: string[], flag: string): boolean {
  const args = argv.slice(2);
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes(flag);
}

export async function main(argv: string[]): Promise<number> {
  if (!wantsColour(argv, process.env, !!process.stderr.isTTY)) chalk.level = 0;
  const program = buildProgram();
  type Kind = 'migrate' | 'recover' | 'replicate' | 'failover';
  let migration: { container: string; host: string; kind: Kind; raw: RawOptions & RawReplicaOptions } | undefined;
  program.action((container: string, host: string) => {
    migration = { container, host, kind: 'migrate', raw: { ...program.opts(), given: givenFlags(program) } };
  });
  for (const kind of ['recover', 'replicate', 'failover'] as const) {
    const cmd = program.commands.find((c) => c.name() === kind);
    cmd?.action((container: string, host: string, o: RawOptions) => {
      // recover takes the migration's own flags (the watchdog passes them): they are not
      // checked against a method again.
      migration = { container, host, kind, raw: { ...o, given: kind === 'recover' ? undefined : givenFlags(cmd) } };
    });
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // (migrate help WORD, WORD no command: commander prints the help and fails with 1.)
      if (
        (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') &&
        err.exitCode === 0
      )
        return EXIT.OK;
      if (err.code === 'commander.help') {
        const word = argv[argv.indexOf('help') + 1] ?? '';
        usageJson(argv, `"${word}" is not a command`, 'migrate help lists the commands.');
        return EXIT.USAGE;
      }
      const hint = sshHabitHint(err.message);
      if (hint) process.stderr.write(`  ${hint}\n`);
      usageJson(argv, err.message.replace(/^error: /, ''), hint);
      return EXIT.USAGE;
    }
    if (err instanceof MigrateError) {
      process.stderr.write(chalk.red(`error: ${err.message}\n`) + (err.hint ? `  ${err.hint}\n` : ''));
      if (err.exitCode === EXIT.USAGE) usageJson(argv, err.message, err.hint);
      return err.exitCode;
    }
    throw err;
  }
  // A subcommand (completion) ran and printed what it had to.
  if (!migration) return EXIT.OK;
  const { container, host } = migration;
  const raw = migration.raw;
  let opts;
  let replica: ReplicaOptions | undefined;
  let failoverOpts: FailoverOptions | undefined;
  try {
    opts = resolveOptions(container, host, raw);
    if (migration.kind === 'replicate') replica = resolveReplicaOptions(container, raw);
    if (migration.kind === 'failover') failoverOpts = resolveFailoverOptions(container, raw);
    // runc's state and CRIU need root here; failover from a third machine needs nothing local.
    const needsRoot = migration.kind !== 'failover' || host === 'local';
    if (needsRoot && process.getuid?.() !== 0)
      throw new UsageError(
        `migrate ${migration.kind === 'migrate' ? '' : `${migration.kind} `}must run as root on this host: runc's state and CRIU's checkpoints need it`,
        'Run it as root (sudo migrate ...). A non-root user on the other host is --sudo.',
      );
  } catch (err) {
    if (err instanceof MigrateError) {
      process.stderr.write(chalk.red(`error: ${err.message}\n`) + (err.hint ? `  ${err.hint}\n` : ''));
      if (err.exitCode === EXIT.USAGE) usageJson(argv, err.message, err.hint, migration);
      return err.exitCode;
    }
    throw err;
  }

  // A terminal that reports no width (a pty nobody sized, as script(1) makes) cannot take
  // a spinner's redraws: ora clears lines without end there. Nor does ora redraw under CI
  // or TERM=dumb (it prints each line once). Plain lines for all of them.
  const sized = process.stderr.isTTY && (process.stderr.columns ?? 0) > 0;
  const interactive = sized && process.env.TERM !== 'dumb' && !('CI' in process.env);
  const mode = opts.json || opts.quiet ? 'silent' : interactive ? 'tty' : 'plain';
  const progress = new Progress(mode, opts.verbose, chalk.level > 0, opts.quiet);
  installSignalHandlers(progress);
  if (replica) return replicaCommand(opts, replica, progress);
  if (failoverOpts) return failoverCommand(opts, failoverOpts, progress);
  const report: Report =
    migration.kind === 'recover'
      ? await recoverCommand(opts, progress)
      : await migrate(opts, progress, faultsFrom(process.env));
  if (opts.json) {
    process.stdout.write(toJson(report) + '\n');
  } else {
    if (report.error) process.stderr.write(humanError(report) + '\n');
    const s = humanSummary(report);
    if (s) process.stdout.write(s + '\n');
  }
  return report.exitCode;
}

/**
 * With --json anywhere on the command line, a usage error is one JSON object on stdout
 * too (the flags could not be read, so --json is looked for by hand): scripts get a
 * report for every outcome.
 */
/**
 * With --json, a usage error's report: one object, as every outcome has. The container
 * and the destination are in it once the command line named them (not when it could not
 * be parsed: a guess at which word is which would mislead a script).
 */
function usageJson(argv: string[], message: string, hint?: string, about?: { container: string; host: string }): void {
  if (!flagIn(argv, '--json')) return;
  const report = {
    outcome: 'refused',
    exitCode: EXIT.USAGE,
    version: packageVersion(),
    ...(about && { container: about.container, source: os.hostname(), destination: about.host }),
    runningOn: 'unknown',
    warnings: [],
    error: { stage: 'usage', message, hint },
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** What a replicate or failover report's error looks like on a terminal. */
function printError(e: { message: string; hint?: string } | undefined): void {
  if (e) process.stderr.write(chalk.red(`error: ${e.message}\n`) + (e.hint ? `  ${e.hint}\n` : ''));
}

async function replicaCommand(opts: Options, r: ReplicaOptions, progress: Progress): Promise<number> {
  const emit = (e: ReplicaEvent) => {
    if (opts.json) process.stdout.write(`${JSON.stringify(e)}\n`);
    else progress.info(describeEvent(e));
  };
  const report = await replicate(opts, r, progress, emit);
  if (opts.json) process.stdout.write(`${JSON.stringify({ event: 'end', ...report })}\n`);
  else printError(report.error);
  return report.exitCode;
}

async function failoverCommand(opts: Options, f: FailoverOptions, progress: Progress): Promise<number> {
  const report = await failover(opts, f, progress);
  if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else printError(report.error);
  return report.exitCode;
}

/** One line for a terminal per replication event. */
function describeEvent(e: ReplicaEvent): string {
  switch (e.event) {
    case 'checkpoint':
      return `checkpoint ${e.seq}: ${(e.bytes / 1048576).toFixed(1)} MiB of images, frozen ${e.freezeMs} ms (files synced in the freeze: ${e.filesSent}), ${Object.values(e.parts).reduce((a, b) => a + b, 0)} ms in all`;
    case 'checkpoint-failed':
      return `checkpoint ${e.seq} failed (the previous one stays the latest): ${e.error}`;
    case 'fenced':
      return `FENCED at ${e.at}: ${e.why}`;
    case 'unfenced':
      return `the standby confirmed a renewal: resumed after ${e.pausedMs} ms paused`;
    case 'lease-lost':
      return `the lease could not be renewed (${e.error}); retrying every interval`;
    case 'failed-over':
      return `the standby failed over at ${e.at} (${e.by})`;
    case 'trigger':
      return `the container asked: ${JSON.stringify(e.text)} (${e.action})`;
    case 'pre-dump':
      return `pre-dump ${e.chain}/${e.n}: ${(e.bytes / 1048576).toFixed(1)} MiB, frozen ${e.frozenMs} ms`;
    case 'pre-dump-failed':
      return `pre-dump ${e.chain}/${e.n} failed (the chain starts again): ${e.error}`;
    case 'pre-dump-skipped':
      return `pre-dump ${e.chain}/${e.n} not begun: ${e.why}`;
    case 'migrated':
      return `migration to the standby, asked by the container: exit ${e.report.exitCode}`;
  }
}
