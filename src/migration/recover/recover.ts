// `migrate recover <container> <host>`: finishes or undoes a migration whose tool died,
// from its intent record on this machine, the source's hold files and the destination's
// guard files. The decision itself is recovery.ts's; this module gathers the facts and
// acts on them. Contract: it ends with the container on exactly one host, both work
// directories and the record removed; or, if the destination cannot be reached while
// the source is in doubt, it changes nothing and says so (run it again later).
import fs from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { EXIT, MigrateError } from '../../errors.js';
import { LocalHost, RemoteHost, type Host, type RunResult } from '../../host.js';
import { DEFAULTS, type Options } from '../../options.js';
import type { Progress } from '../../progress.js';
import type { Report } from '../../report.js';
import { SshConnection } from '../../ssh/connection.js';
import { resolveEndpoint } from '../../ssh/endpoint.js';
import { newReport } from '../report/build.js';
import { isNotExist, parseState, runc, type RuncGlobal } from '../../runc.js';
import { guardFilesCommand, parseGuardFiles, resumeCommand } from '../switchover/guard.js';
import { GUARD_FILE } from '../switchover/protocol.js';
import { decide, readHold, readLazyExit, WATCHDOG_FILE } from '../switchover/hold.js';
import { addr } from '../network/address.js';
import {
  intentPath,
  liveMigration,
  lockContainer,
  readIntent,
  removeIntent,
  RunningAlready,
  type Intent,
} from './intent.js';
import { removeCriuLockRules, unlockAfterWindow } from '../network/netlock.js';
import { decideRecovery, type RecoveryDecision, type RecoveryFacts } from './recovery.js';
import { removeContainer } from '../switchover/shared.js';
import { removeWorkDirs } from '../switchover/reap.js';

export interface RecoverResult {
  /**
   * Where the container runs now; 'in-doubt' when nothing could be decided; 'kept' when the
   * destination committed (or may have) and lost its copy: the frozen source is kept.
   */
  runningOn: 'source' | 'destination' | 'in-doubt' | 'kept' | 'nowhere';
  why: string;
  intent: Intent;
}

/**
 * Whether a process still runs whose command line names DIR (the checkpoint and its
 * CRIU), but for the source's post-copy watchdog (it waits for the checkpoint, and may be
 * what runs this recover).
 */
function processMentions(dir: string): boolean {
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(dir) && !cmd.includes(`/hold/${WATCHDOG_FILE}`)) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

async function status(host: Host, g: RuncGlobal, name: string): Promise<string | undefined> {
  const r: RunResult | undefined = await host.run(runc.state(g, name), { allowFail: true }).catch(() => undefined);
  if (!r) return undefined;
  if (r.code === 0) {
    try {
      return parseState(r.stdout).status;
    } catch {
      return 'unknown';
    }
  }
  return isNotExist(r.stderr) ? 'missing' : undefined;
}

export interface RecoverEnv {
  src: Host;
  /** The destination, or undefined when it could not be reached. */
  dst?: Host;
  warn(message: string): void;
  info(message: string): void;
  /** recover --resume-source: the operator says the destination's committed copy is lost. */
  resumeSource?: boolean;
}

/** Reads the record and settles the migration it describes. Throws MigrateError when there is nothing it may do. */
export async function recover(intentFile: string, env: RecoverEnv): Promise<RecoverResult | undefined> {
  const intent = await readIntent(intentFile);
  if (!intent) return undefined;
  // runc on each side as the migration ran it, whatever this command was given.
  const { srcRunc, dstRunc } = intent;
  if (intent.pid !== process.pid && liveMigration(intent.pid)) {
    throw new MigrateError(
      `a migration of ${intent.container} is still running (pid ${intent.pid}, since ${intent.startedAt})`,
      EXIT.PREFLIGHT,
      'Wait for it to end; if it hangs, stop it with kill -TERM and run migrate recover again.',
    );
  }
  const guardFiles = async (): Promise<RecoveryFacts['guard']> => {
    if (!env.dst) return undefined;
    const r = await env.dst.run(guardFilesCommand(intent.guardDir), { allowFail: true }).catch(() => undefined);
    return r ? parseGuardFiles(r.stdout) : undefined;
  };
  let decision: RecoveryDecision | undefined;
  for (let i = 0; i < 600; i++) {
    const facts: RecoveryFacts = {
      hold: await readHold(intent.holdDir),
      checkpointRunning: processMentions(intent.localBase),
      guard: await guardFiles(),
      destinationStatus: env.dst ? await status(env.dst, dstRunc, intent.container) : undefined,
      checkpointExit: (await readLazyExit(intent.holdDir, null)) ?? undefined,
      phase: intent.phase,
      resumeSource: env.resumeSource,
    };
    decision = decideRecovery(facts);
    if (decision.action !== 'wait') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!decision || decision.action === 'wait')
    throw new MigrateError(
      `could not settle the migration of ${intent.container}: ${decision?.why ?? 'no decision'}`,
      EXIT.UNSAFE,
      'Run migrate recover again in a minute.',
    );
  if (decision.action === 'in-doubt') return { runningOn: 'in-doubt', why: decision.why, intent };
  // Committed is final: nothing is changed, the record stays for the operator.
  if (decision.action === 'kept') return { runningOn: 'kept', why: decision.why, intent };
  // Nothing to run on either host: the record and the work directories stay for the operator.
  if (decision.action === 'nowhere') return { runningOn: 'nowhere', why: decision.why, intent };
  env.info(`recover: ${decision.why}: the container stays on the ${decision.action}`);

  if (decision.action === 'source') {
    if (decision.removeDestinationCopy && env.dst) {
      // Only a copy this migration's guard restored (its log says so) is ours to remove.
      const log = await env.dst.run(['cat', `${intent.guardDir}/log`], { allowFail: true });
      if (/^restored\b/m.test(log.stdout) && !/^removed\b/m.test(log.stdout)) {
        await removeContainer(env.dst, dstRunc, intent.container);
      }
    }
  }
  if (decision.action === 'source' && decision.afterLazyWindow) {
    // What the hold would have done on a rollback; its script had exited when the window opened.
    if (intent.moveIp && existsSync(`${intent.holdDir}/address-released`)) {
      const m = intent.moveIp;
      await env.src.run(addr.giveBack(await arpingCommand(env.src), m, m.srcDev, intent.holdDir), {
        allowFail: true,
      });
    }
    const st = await env.src.run(runc.state(srcRunc, intent.container), { allowFail: true });
    const pid = st.code === 0 ? parseState(st.stdout).pid : undefined;
    const hung = await unlockAfterWindow((argv) => env.src.run(argv, { allowFail: true }), {
      pid,
      ps: runc.ps(srcRunc, intent.container),
      keep: intent.lockRulesBefore ?? [],
      mine: intent.connections,
    });
    if (hung) env.warn(hung);
  }
  if (decision.action === 'destination' && decision.removeSourceCopy) {
    env.warn(`removing the source's copy of ${intent.container}: the destination has every page`);
    await removeContainer(env.src, srcRunc, intent.container);
  }
  if (decision.action === 'destination' && decision.resumeCopy && env.dst) {
    // The guard marked its commit; every task of its copy must run (continuing a running one changes nothing).
    // And its address unmuted and announced, where the guard did not get that far.
    if (intent.moveIp) {
      const m = intent.moveIp;
      const u = await env.dst.run(
        addr.unmuteAfterGuard(await arpingCommand(env.dst), m, m.dstDev, `${intent.guardDir}/${GUARD_FILE.log}`),
        { allowFail: true },
      );
      if (u.code !== 0)
        env.warn(
          `the destination committed, but its service address ${m.address} could not be unmuted there (${u.stderr.trim()}): remove the DROP rule for it (iptables -D OUTPUT -s ${m.address} -j DROP) and set arp_ignore of ${m.dstDev} back`,
        );
    }
    const r = await env.dst.run(resumeCommand(runc.ps(dstRunc, intent.container)), { allowFail: true });
    if (r.code !== 0)
      throw new MigrateError(
        `the destination committed, but its copy's tasks could not all be continued: ${r.stderr.trim()}`,
        EXIT.UNSAFE,
        'The source stays frozen. Look at the destination (runc ps), then run migrate recover again.',
      );
  }
  if (decision.finalVerdict) await decide(intent.holdDir, 'final', decision.finalVerdict);
  // The hold has its answer: wait for the checkpoint to end (the source resumes or goes).
  for (let i = 0; i < 600 && processMentions(intent.localBase); i++) await new Promise((r) => setTimeout(r, 100));
  const srcStatus = await status(env.src, srcRunc, intent.container);
  if (decision.action === 'destination') {
    if (srcStatus !== 'missing')
      env.warn(
        `the source still has ${intent.container} (${srcStatus}) after the commit: remove it with runc --root ${srcRunc.root} delete --force ${intent.container}`,
      );
    await removeCriuLockRules(
      (argv) => env.src.run(argv, { allowFail: true }),
      intent.lockRulesBefore ?? [],
      intent.connections,
    );
  } else if (srcStatus !== 'running') {
    env.warn(`the source's ${intent.container} is ${srcStatus} after the rollback`);
  }
  // Both work directories and the record go last: they were what this needed.
  await fs.rm(intent.localBase, { recursive: true, force: true });
  if (env.dst) await env.dst.run(removeWorkDirs([intent.remoteBase]), { allowFail: true }).catch(() => undefined);
  await removeIntent(intentFile);
  return { runningOn: decision.action, why: decision.why, intent };
}

/** `migrate recover <container> <host>`: settles an unfinished migration (recover.ts). */
export async function recoverCommand(opts: Options, progress: Progress): Promise<Report> {
  const t0 = performance.now();
  const log = (host: string, line: string) => progress.command(host, line);
  const src = new LocalHost(log);
  const report = newReport(opts, progress, 'nothing-to-recover', EXIT.OK);
  const file = intentPath(DEFAULTS.intentDir, opts.container);
  let ssh: SshConnection | undefined;
  let release: (() => Promise<void>) | undefined;
  try {
    // The records, the hold and runc's state are root's: anyone else would see none of them.
    if (process.getuid?.() !== 0)
      throw new MigrateError(
        'migrate recover must run as root: the records of unfinished migrations, the hold files and runc state are readable by root only',
        EXIT.USAGE,
        'Run it again as root (sudo migrate recover ...).',
      );
    // One at a time with migrate: a running migration of this container is not touched;
    // a dead one's lock goes with this run.
    const unlock = await lockContainer(DEFAULTS.intentDir, opts.container).catch((err: Error) => {
      if (err instanceof RunningAlready)
        throw new MigrateError(
          `a migration of ${opts.container} is still running (pid ${err.pid})`,
          EXIT.PREFLIGHT,
          'Wait for it to end; if it hangs, stop it with kill -TERM and run migrate recover again.',
        );
      throw err;
    });
    release = unlock;
    const rec = await readIntent(file).catch((err: Error) => {
      throw new MigrateError(
        err.message,
        EXIT.UNSAFE,
        'Nothing was changed. Settle the container by hand (runc state on both hosts), then remove the record.',
      );
    });
    if (rec) {
      if (rec.destination !== opts.destination)
        progress.warn(
          `the record names the destination ${rec.destination}; connecting to ${opts.destination} as given`,
        );
      const endpoint = resolveEndpoint(opts);
      ssh = await progress
        .phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () =>
          SshConnection.connect(endpoint),
        )
        .catch((err: Error) => {
          progress.warn(
            `the destination cannot be reached (${err.message}): deciding from the source alone where that is safe`,
          );
          return undefined;
        });
      const r = await progress.phase('recover', `settle the migration of ${opts.container} (${rec.phase})`, () =>
        recover(file, {
          src,
          dst: ssh ? new RemoteHost(ssh, opts.sudo, log) : undefined,
          warn: (m) => progress.warn(m),
          info: (m) => progress.info(m),
          resumeSource: opts.resumeSource,
        }),
      );
      if (r?.runningOn === 'in-doubt') {
        report.outcome = 'in-doubt';
        report.exitCode = EXIT.UNSAFE;
        report.error = {
          message: `still in doubt: ${r.why}`,
          hint: 'The source stays frozen; nothing was changed. Run migrate recover again once the destination can be reached.',
        };
      } else if (r?.runningOn === 'nowhere') {
        report.outcome = 'unsafe';
        report.exitCode = EXIT.UNSAFE;
        report.runningOn = 'none';
        report.error = {
          message: r.why,
          hint: `Nothing was changed. The container's memory was only in the source's tasks; its files are on both hosts (the record ${file} and the work directories stay).`,
        };
      } else if (r?.runningOn === 'kept') {
        report.outcome = 'in-doubt';
        report.exitCode = EXIT.UNSAFE;
        report.error = {
          message: r.why,
          hint: `Nothing was changed. If the destination's copy is truly lost (look there: runc --root ${rec.dstRunc.root} state ${opts.container}), resume the source with: migrate recover ${opts.container} ${opts.destination} --resume-source (what the copy did after the commit is lost).`,
        };
      } else if (r) {
        report.outcome = 'recovered';
        report.runningOn = r.runningOn;
        report.recoveredWhy = r.why;
      }
    }
  } catch (err) {
    const e = err as Error;
    report.outcome = 'unsafe';
    report.exitCode = e instanceof MigrateError ? e.exitCode : EXIT.INTERNAL;
    report.error = { message: e.message, hint: e instanceof MigrateError ? e.hint : undefined };
  } finally {
    ssh?.close();
    await release?.().catch(() => undefined);
  }
  report.totalMs = performance.now() - t0;
  return report;
}

/** arping on HOST: iputils' where installed, else busybox's (both take the flags addr.garp gives). */
async function arpingCommand(host: Host): Promise<string[]> {
  return addr.arpingOf((await host.run(addr.arpingProbe, { allowFail: true })).stdout) ?? ['busybox', 'arping'];
}
