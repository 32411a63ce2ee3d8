// Prepare: what the migration holds on the hosts, acquired after the preflight (which
// changes nothing) and before anything is frozen: the work directories, the TLS
// certificates, the page server's port rules, a raised pipe size, the CPU throttle, the
// file sync's change log. Each is pushed on the undo stack as it is acquired; a failure
// here is a refusal (nothing frozen) and the stack undoes what was acquired.
import fs from 'node:fs/promises';
import path from 'node:path';
import { PreflightError } from '../../errors.js';
import { DEFAULTS } from '../../options.js';
import { formatBytes } from '../../progress.js';
import { type FilesBasis, FilesSync } from '../files/rootfs.js';
import { guardPort } from '../network/portguard.js';
import { makeCertificates, type Certificates } from '../pages/certs.js';
import { Throttle } from '../pages/throttle.js';
import type { Plan } from '../plan/plan.js';
import { required, type Facts } from '../preflight/facts.js';
import { phaseName } from '../preflight/run.js';
import type { Session } from '../session.js';
import { localKeeper, remoteKeeper } from './keeper.js';
import { workPaths, type WorkDirs, type WorkPaths } from './paths.js';
import { OWNER_FILE, ownerLine, removeStale } from './stale.js';
import type { Undo } from './undo.js';
import { warmBytes, warmConnection } from './warm.js';
import { removeWorkDirs } from '../switchover/reap.js';

export interface Resources {
  readonly work: WorkDirs;
  /** The TLS transport's certificates (pages/certs.ts). */
  readonly certs?: Certificates;
  /** --auto-converge: the container's CPU throttle. */
  readonly throttle?: Throttle;
  /** The rootfs and volumes to sync (its trees may be none: all on shared storage); undefined when no sync was asked for. */
  readonly files?: FilesSync;
}

export async function prepare(
  s: Session,
  facts: Facts,
  plan: Plan,
  undo: Undo,
  /** A replica's tree on the destination the root filesystem's first pre-sync starts from. */
  basis?: FilesBasis,
): Promise<Resources> {
  const step = <T>(title: string, run: () => Promise<{ value: T; detail: string }>) =>
    s.progress
      .phase(phaseName('prepare', title), title, run, (r) => (r.detail ? `(${r.detail})` : undefined))
      .then((r) => r.value);
  const throttle = facts.source.throttle
    ? await step('CPU throttle (auto-converge)', async () => {
        const t = await Throttle.locate(facts.source.state.pid);
        if ('refuse' in t)
          throw new PreflightError(
            `--auto-converge cannot throttle ${s.opts.container}: ${t.refuse}`,
            "Leave out --auto-converge, or enable the cpu controller for the container's cgroup.",
          );
        undo.add("lift the container's CPU throttle", () => t.lift());
        return { value: t, detail: t.describe() };
      })
    : undefined;
  const local = await step('work directory on the source', () => localWorkDir(s, undo));
  const remote = await step('work directory on the destination', () => remoteWorkDir(s, undo));
  const work = { local, remote };
  const certs = await step('page transport', () => guardTransport(s, facts, plan, work, undo));
  // One freeze whose images (stream) or pages (tunnel) cross the SSH connection: its sshd
  // is warmed first (warm.ts).
  if (plan.method.kind === 'one-shot' && (plan.transport === 'stream' || plan.transport === 'tunnel'))
    await step('warm the SSH connection', async () => {
      const bytes = warmBytes(facts.source.memoryBytes);
      // Best effort: a failed warm-up costs the copy its time, not the migration.
      const ms = await warmConnection(s, bytes).catch((err: Error) => err);
      const detail = typeof ms === 'number' ? `${formatBytes(bytes)} in ${ms} ms` : `skipped: ${ms.message}`;
      return { value: undefined, detail };
    });
  if (facts.destination.pipeSizes.some((p) => p.raiseFrom !== undefined))
    await step('pipe size (post-copy)', () => raisePipeSize(s, facts, undo));
  const wanted = facts.destination.files;
  const files = wanted
    ? await step('file sync', async () => {
        const f = wanted;
        const sync = await FilesSync.create(
          s,
          { work: local, bundle: facts.source.bundle, pid: facts.source.state.pid },
          f.plan,
          undo,
          { shared: f.shared, srcConfig: f.srcConfig, verify: s.opts.verifyFiles, basis },
        );
        return { value: sync, detail: sync.trees.map((t) => t.what).join(', ') || 'nothing to sync (shared storage)' };
      })
    : undefined;
  return { work, certs, throttle, files };
}

async function localWorkDir(s: Session, undo: Undo): Promise<{ value: WorkPaths; detail: string }> {
  let base: string;
  try {
    base = await fs.mkdtemp(path.join(s.opts.workDir, 'runc-migrate.'));
  } catch (err) {
    throw new PreflightError(
      `cannot create a work directory in ${s.opts.workDir} on the source: ${(err as Error).message}`,
      'Choose a writable directory with --work-dir DIR (tmpfs, such as /dev/shm, keeps images off disk).',
    );
  }
  const p = workPaths(base);
  undo.add(`remove ${base} on the source`, () => fs.rm(base, { recursive: true, force: true }), { workDir: true });
  await fs.writeFile(path.join(base, OWNER_FILE), ownerLine());
  await fs.mkdir(p.images, { mode: 0o700 });
  await fs.mkdir(p.criuWork, { mode: 0o700 });
  const stale = await removeStale(s.src, s.opts.workDir, DEFAULTS.intentDir, [base]);
  return { value: p, detail: stale.length ? `${base}; removed ${stale.length} stale: ${stale.join(' ')}` : base };
}

async function remoteWorkDir(s: Session, undo: Undo): Promise<{ value: WorkPaths; detail: string }> {
  const r = await s.dst.run(['mktemp', '-d', '-p', s.opts.remoteWorkDir, 'runc-migrate.XXXXXXXX'], { allowFail: true });
  if (r.code !== 0) {
    throw new PreflightError(
      `cannot create a work directory in ${s.opts.remoteWorkDir} on the destination: ${r.stderr.trim()}`,
      `Make ${s.opts.remoteWorkDir} exist and writable there${s.opts.sudo ? '' : ' (or use --sudo)'}, or choose another with --remote-work-dir DIR.`,
    );
  }
  const base = r.stdout.trim();
  const p = workPaths(base);
  undo.add(
    `remove ${base} on the destination`,
    async () => {
      try {
        await s.dst.run(removeWorkDirs([base]), { allowFail: true });
      } catch (err) {
        undo.left.push(base);
        throw err;
      }
    },
    { workDir: true },
  );
  await s.dst.run(['mkdir', '-m', '0700', p.images, p.criuWork]);
  await s.dst.run(['tee', path.join(base, OWNER_FILE)], { input: ownerLine() });
  const stale = await removeStale(s.dst, s.opts.remoteWorkDir, DEFAULTS.intentDir, [base]);
  return { value: p, detail: stale.length ? `${base}; removed ${stale.length} stale: ${stale.join(' ')}` : base };
}

/** For TLS, this migration's certificates; for every page server, its port closed to others. */
async function guardTransport(
  s: Session,
  facts: Facts,
  plan: Plan,
  work: WorkDirs,
  undo: Undo,
): Promise<{ value: Certificates | undefined; detail: string }> {
  const d = facts.destination;
  const m = plan.method;
  if (plan.transport === 'stream') return { value: undefined, detail: 'stream: no page server' };
  const parts: string[] = [];
  let certs: Certificates | undefined;
  if (plan.transport === 'tls') {
    const c =
      m.kind === 'hybrid'
        ? await makeCertificates(
            s,
            work,
            undo,
            [required(d.address, "the destination's address"), m.sourceAddress],
            'both',
          )
        : m.kind === 'post-copy'
          ? await makeCertificates(s, work, undo, m.sourceAddress, 'source')
          : await makeCertificates(s, work, undo, required(d.address, "the destination's address"));
    undo.add('remove the TLS keys on both hosts', () => c.remove());
    certs = c;
    parts.push('certificates made for this migration');
  }
  const guard = await guardPort(s, {
    method: m.kind,
    transport: plan.transport,
    tag: path.basename(work.local.base),
    address: d.address,
    sourceAddress: d.sourceAddress,
  });
  if ('skipped' in guard) {
    s.progress.warn(
      `the page server's port is not closed to other clients (${guard.skipped}): another client reaching it first would make the dump fail (the source then resumes)`,
    );
  } else {
    undo.add("remove the page server's port rules", () => guard.remove());
    parts.push(guard.describe);
  }
  return { value: certs, detail: parts.join('; ') };
}

/** --tune-sysctl: fs.pipe-max-size raised where post-copy needs it, put back on every exit path (the tool's death included). */
async function raisePipeSize(s: Session, facts: Facts, undo: Undo): Promise<{ value: undefined; detail: string }> {
  const needed = DEFAULTS.lazyPipeMaxBytes;
  const notes: string[] = [];
  for (const p of facts.destination.pipeSizes) {
    if (p.raiseFrom === undefined) continue;
    const host = p.on === 'destination' ? s.dst : s.src;
    const set = ['sh', '-c', `echo ${needed} > /proc/sys/fs/pipe-max-size`];
    const back = ['sh', '-c', `echo ${p.raiseFrom} > /proc/sys/fs/pipe-max-size`];
    const w = await host.run(set, { allowFail: true });
    if (w.code !== 0)
      throw new PreflightError(
        `could not raise fs.pipe-max-size on the ${host.name}: ${w.stderr.trim()}`,
        `Run sysctl -w fs.pipe-max-size=${needed} there yourself.`,
      );
    const keeper =
      p.on === 'destination'
        ? await remoteKeeper(s.dst, 'sysctl-keeper', back)
        : await localKeeper('sysctl-keeper', back);
    undo.add(`put fs.pipe-max-size back to ${p.raiseFrom} on the ${host.name}`, () => keeper());
    notes.push(`fs.pipe-max-size raised from ${p.raiseFrom} to ${needed} on the ${host.name} (put back after)`);
  }
  return { value: undefined, detail: notes.join('; ') };
}
