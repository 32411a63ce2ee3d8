// `migrate failover CONTAINER HOST`: restores the standby's latest complete checkpoint
// (store.ts) once the source has stopped, as the lease (lease.ts) or the operator says.
// In order:
//   1. --source HOST: the source is asked over SSH, and the container stopped there if it
//      runs (killed and deleted): then no lease is needed;
//   2. refused when the container already runs on the standby, or no checkpoint is complete;
//   3. under the standby's lease lock, the decision (lease.ts failover) and, when it is go,
//      the lease marked failed over in the same step: a renewal that comes later is
//      refused, and the source stays stopped; --watch repeats this until the lease expires;
//   4. runc restore from the checkpoint's own bundle and images, its TCP connections
//      restored closed (CRIU's tcp-close: the peers see them end, the program sees EOF and
//      reconnects), and the container's state confirmed running.
// RPO is the checkpoint's age (the standby's clock against the source's at the freeze:
// as good as their clocks agree); RTO runs from the call to the container confirmed running.
import { packageVersion } from '../../version.js';
import path from 'node:path';
import { EXIT, MigrateError, PreflightError, type ExitCode } from '../../errors.js';
import { type Host, LocalHost, RemoteHost } from '../../host.js';
import type { FailoverOptions, MoveIp, Options } from '../../options.js';
import { addr, parseAddrDev, parseRouteDev } from '../network/address.js';
import type { Progress } from '../../progress.js';
import { runc, type RuncGlobal } from '../../runc.js';
import { SshConnection } from '../../ssh/connection.js';
import { criuLogErrors } from '../../criu.js';
import { resolveEndpoint } from '../../ssh/endpoint.js';
import { interruption } from '../../interrupt.js';
import { runcOf } from '../session.js';
import { removeContainer } from '../switchover/shared.js';
import { failover as decide, type LeaseRecord } from './lease.js';
import { withLease } from './leasefile.js';
import { removeWorkDirs } from '../switchover/reap.js';
import { type CheckpointRecord, LIST_SCRIPT, parseListing, restorable } from './store.js';

export interface FailoverReport {
  command: 'failover';
  /** The tool's version. */
  version: string;
  container: string;
  standby: string;
  exitCode: ExitCode;
  /** The checkpoint restored, its age (RPO) and the time from the call to the container running (RTO). */
  restored?: { seq: number; frozenAt: string; rpoMs: number; rtoMs: number; restoreMs: number };
  /** What --source found there. */
  source?: 'not-there' | 'stopped-now';
  /** The lease as failover found it. */
  lease?: { holder: string; expiredMsAgo?: number; fence: string; released?: boolean };
  /** --move-ip: the address now on the standby. */
  address?: { address: string; dev: string };
  error?: { message: string; hint?: string };
}

/** How often --watch looks at the lease. */
const WATCH_POLL_MS = 1000;

export async function failover(opts: Options, f: FailoverOptions, progress: Progress): Promise<FailoverReport> {
  const t0 = performance.now();
  const report: FailoverReport = {
    command: 'failover',
    version: packageVersion(),
    container: opts.container,
    standby: opts.destination,
    exitCode: EXIT.OK,
  };
  const log = (host: string, line: string) => progress.command(host, line);
  const closers: Array<() => void> = [];
  try {
    const { srcRunc, dstRunc } = runcOf(opts);
    const standby: Host =
      opts.destination === 'local'
        ? new LocalHost(log, 'standby')
        : new RemoteHost(await connect(opts, opts.destination, progress, closers), opts.sudo, log);

    // 1. The source, when named: the container stopped there (and confirmed gone).
    let sourceStopped = false;
    let sourceHost: Host | undefined;
    if (f.source) {
      const src = new RemoteHost(await connect(opts, f.source, progress, closers), opts.sudo, log);
      sourceHost = src;
      const st = await stateOn(src, srcRunc, opts.container);
      if (st !== 'absent') {
        progress.warn(`${opts.container} is ${st} on ${f.source}: stopping it there (killed and deleted)`);
        await removeContainer(src, srcRunc, opts.container);
        const after = await stateOn(src, srcRunc, opts.container);
        if (after !== 'absent')
          throw new PreflightError(
            `${opts.container} could not be stopped on ${f.source} (runc state says ${after})`,
            'Stop it there by hand, then run failover again.',
          );
        report.source = 'stopped-now';
      } else report.source = 'not-there';
      sourceStopped = true;
    }

    // 2. What the standby has.
    const here = await stateOn(standby, dstRunc, opts.container);
    if (here === 'running' || here === 'paused' || here === 'created')
      throw new PreflightError(
        `${opts.container} already runs on the standby (${here})`,
        'Nothing to fail over: it was restored here already. Look at it with runc state.',
      );
    if (here !== 'absent')
      throw new PreflightError(
        `a stopped container named ${opts.container} is on the standby`,
        `Remove it first (runc delete ${opts.container} on the standby), then run failover again.`,
      );
    const by = `${await hostName(standby)} failover`;

    // 3. The decision under the lease's lock (repeated by --watch until it may go).
    let checkpoint: CheckpointRecord | undefined;
    let standbyNow = 0;
    for (;;) {
      const listing = parseListing(
        (await standby.run(['sh', '-c', LIST_SCRIPT, 'sh', f.dir], { allowFail: true })).stdout,
      );
      checkpoint = restorable(listing);
      if (!checkpoint)
        throw new PreflightError(
          `the standby holds no complete checkpoint of ${opts.container} in ${f.dir}`,
          listing.partial.length
            ? `Only torn ones (${listing.partial.join(', ')}), which are never restored.`
            : 'Run migrate replicate first (or give --replica-dir where it writes).',
        );
      type Verdict = { go: true } | { go: false; refuse: string; hint: string; lease?: LeaseRecord; now: number };
      const answer = await withLease<Verdict>(standby, f.dir, (now, lease, head) => {
        standbyNow = head.wallMs;
        report.lease = lease && describeLease(lease, now);
        const a = decide(lease, now, {
          sourceConfirmedStopped: sourceStopped,
          force: f.force,
          by,
          runningHere: false,
          wallMs: head.wallMs,
        });
        return 'go' in a ? { write: a.go, result: { go: true } } : { result: { go: false, ...a, lease, now } };
      });
      if (answer.go) break;
      const waiting = f.watch && (!answer.lease || answer.lease.released || answer.lease.expiresAt >= answer.now);
      if (!waiting) throw new PreflightError(answer.refuse, answer.hint);
      if (interruption.requested)
        throw new MigrateError(`stopped by ${interruption.signal} while watching`, EXIT.INTERRUPTED);
      progress.status(`watching the lease: ${answer.refuse}`);
      await new Promise((r) => setTimeout(r, WATCH_POLL_MS));
    }
    const decidedAt = performance.now();

    // 4. The service address, then the restore from the checkpoint's own bundle and images.
    const dir = path.posix.join(f.dir, 'checkpoints', String(checkpoint.seq));
    const moved = opts.moveIp ? await takeAddress(standby, opts.moveIp, sourceHost) : undefined;
    const restoreMs = await restore(standby, dstRunc, opts, dir, checkpoint);
    const st = await stateOn(standby, dstRunc, opts.container);
    if (st !== 'running')
      throw new MigrateError(
        `${opts.container} was restored from checkpoint ${checkpoint.seq} but runc state says ${st}`,
        EXIT.UNSAFE,
        'The lease is marked failed over: the source stays stopped. Look at the container on the standby; failover can be run again once it is removed there.',
      );
    if (moved) {
      // Best effort: peers that miss it find the address by asking.
      await standby.run(moved.announce, { allowFail: true });
      report.address = { address: `${moved.m.address}/${moved.m.prefix}`, dev: moved.dev };
    }
    const rtoMs = Math.round(performance.now() - t0);
    report.restored = {
      seq: checkpoint.seq,
      frozenAt: new Date(checkpoint.frozenAt).toISOString(),
      rpoMs: Math.round(standbyNow + (performance.now() - decidedAt) - checkpoint.frozenAt),
      rtoMs,
      restoreMs,
    };
    progress.info(
      `${opts.container} runs on the standby from checkpoint ${checkpoint.seq} (taken ${Math.round(report.restored.rpoMs / 1000)} s before); ${rtoMs} ms from the call`,
    );
  } catch (err) {
    const e = err instanceof MigrateError ? err : new MigrateError((err as Error).message, EXIT.INTERNAL);
    report.exitCode = e.exitCode;
    report.error = { message: e.message, hint: e.hint };
  } finally {
    for (const c of closers) c();
  }
  return report;
}

async function connect(opts: Options, host: string, progress: Progress, closers: Array<() => void>) {
  const endpoint = resolveEndpoint({ ...opts, destination: host });
  const ssh = await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () =>
    SshConnection.connect(endpoint),
  );
  closers.push(() => ssh.close());
  return ssh;
}

function describeLease(l: LeaseRecord, now: number): FailoverReport['lease'] {
  return {
    holder: l.holder,
    expiredMsAgo: l.expiresAt < now ? now - l.expiresAt : undefined,
    fence: l.fence,
    released: l.released,
  };
}

/** The container's status on H as runc states it, or 'absent'. */
export async function stateOn(h: Host, g: RuncGlobal, name: string): Promise<string> {
  const r = await h.run(runc.state(g, name), { allowFail: true });
  if (r.code !== 0) return 'absent';
  return (JSON.parse(r.stdout) as { status: string }).status;
}

async function hostName(h: Host): Promise<string> {
  return (await h.run(['uname', '-n'], { allowFail: true })).stdout.trim() || h.name;
}

/** runc restore of checkpoint DIR, its TCP connections closed; returns its time. The work directory goes after. */
async function restore(h: Host, g: RuncGlobal, opts: Options, dir: string, c: CheckpointRecord): Promise<number> {
  const work = (
    await h.run(['mktemp', '-d', path.posix.join(opts.remoteWorkDir, 'runc-migrate-failover.XXXXXX')])
  ).stdout.trim();
  try {
    const conf = path.posix.join(work, 'criu.conf');
    await h.run(['sh', '-c', 'cat > "$1"', 'sh', conf], { input: 'tcp-close\n' });
    const argv = runc.restore(g, opts.container, {
      bundle: path.posix.join(dir, 'bundle'),
      imagePath: path.posix.join(dir, 'images'),
      workPath: work,
      tcpEstablished: c.tcpEstablished ?? true,
      // Not spendImages: a failed restore leaves the replica as the only copy.
    });
    const t = performance.now();
    const r = await h.run(argv, { allowFail: true, env: { CRIU_CONFIG_FILE: conf } });
    if (r.code !== 0) {
      const logText = (await h.run(['cat', path.posix.join(work, 'restore.log')], { allowFail: true })).stdout;
      const lines = criuLogErrors(logText, 4).join(' | ');
      // What this restore left is removed; a container that runs is not this restore's (a
      // second failover at once restored it first) and is left alone.
      if ((await stateOn(h, g, opts.container)) !== 'running') await removeContainer(h, g, opts.container);
      throw new MigrateError(
        `the restore of checkpoint ${c.seq} failed (exit ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''})${lines ? `; CRIU: ${lines.slice(0, 400)}` : ''}`,
        EXIT.UNSAFE,
        'The lease is marked failed over: the source stays stopped, and the container runs nowhere. Fix what CRIU says, then run failover again (it tries again when the container does not run on the standby).',
      );
    }
    return Math.round(performance.now() - t);
  } finally {
    await h.run(removeWorkDirs([work]), { allowFail: true });
  }
}

/**
 * --move-ip: the address taken off the source when it was reached (--source), and put on
 * the standby's interface (named, or the one its route to the address uses) before the
 * restore; returns the announcement (gratuitous ARP) to send once the container runs.
 */
async function takeAddress(h: Host, m: MoveIp, source: Host | undefined) {
  if (source) {
    const on = parseAddrDev((await source.run(addr.showTo(m.address), { allowFail: true })).stdout);
    if (on) await source.run(addr.del(m, on), { allowFail: true });
  }
  const here = parseAddrDev((await h.run(addr.showTo(m.address), { allowFail: true })).stdout);
  const dev = m.dev ?? here ?? parseRouteDev((await h.run(addr.routeGet(m.address), { allowFail: true })).stdout);
  if (!dev)
    throw new PreflightError(
      `--move-ip: cannot tell which interface of the standby should carry ${m.address}`,
      'Name it: --move-ip ADDR/PREFIX@DEV.',
    );
  if (!here) await h.run(addr.add(m, dev));
  const arping = addr.arpingOf((await h.run(addr.arpingProbe, { allowFail: true })).stdout) ?? ['arping'];
  return { m, dev, announce: addr.garp(arping, m, dev) };
}
