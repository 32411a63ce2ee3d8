// The benchmarks that need dirty-memory tracking: between the two QEMU VMs of test/vm
// (Debian's stock kernel, TCG, 1 vCPU each), the CLI running inside vm1.
//   scaling  memwriter (MEM MiB kept, 256 KiB/s rewritten) at each size: naive (checkpoint
//            to disk, scp, restore), ours one-shot, ours iterative with the default stop
//            rule; freeze-to-running and total (the thesis' figure 5.2).
//   sweep    Redis with 1e6 keys (DEBUG POPULATE) while a client on vm2 SETs a random key
//            every 10 ms: ours iterative with --threshold 1..50 % of the first dump, with
//            the default --max-downtime rule, and one-shot; client gap, freeze-to-running,
//            total, pre-dumps (the thesis' figure 5.1).
//   predump  (only when named) memwriter (PREDUMP_MIB, default 64 MiB, 1 MiB/s rewritten),
//            iterative, --pre-dump-mode splice against read, alternating: how long each
//            pre-dump kept the tasks frozen (CRIU's frozen time), downtime, total.
//   methods  (only when named) the four methods side by side: Redis (METHODS_SIZES MB of
//            1000-byte values, default "32 128 256") with a client on vm2 sending a PING
//            (METHODS_CMD=set: a SET of a random key) every 10 ms on the moved address,
//            moved one-shot (cold), with pre-copy,
//            post-copy and hybrid, rotated; client gap, freeze-to-running, the lazy window
//            and the client's latency in it, lazy pages, total; and the counter one-shot
//            as the baseline.
//   converge (only when named) a memwriter that does not converge (CONVERGE_MIB, default 48
//            MiB, a whole page at a time at 128 MiB/s), pre-copy against --auto-converge,
//            alternating: pre-dumps, throttle, final dump, downtime and its parts.
//   chains   (only when named) migrate replicate of a memwriter (CHAINS_MIB, default 32 MiB,
//            1 MiB/s rewritten) to vm2 every 5 s for CHAINS_FOR (default 120s), with
//            --chain-length 1 (a full dump each time) and 3 (pre-dumps between): the images
//            per checkpoint, its freeze, the pre-dumps' bytes, the replica on vm2's disk.
//   encrypt  (only when named) the page connection's encryption (issue 27, item 4): a
//            memwriter (ENCRYPT_MIB, default 128 MiB, 256 KiB/s rewritten) moved one-shot
//            with --transport direct (clear), tls (CRIU's gnutls), tunnel (SSH), and
//            direct under the kernel's ESP (IPsec transport mode on the page server's
//            port, set up here with ip xfrm, fresh keys each run): AES-GCM and
//            ChaCha20-Poly1305, rotated. The final dump's memwrite time (CRIU's stats),
//            the dump phase, freeze-to-running; an ESP run counts only when vm2's inbound
//            SA counted at least the pages' bytes (the pages did go encrypted).
//   node dist/bench/vm.js [scaling] [sweep] [predump] [methods] [converge] [chains] [encrypt]     (as root; make build first)
// Environment: REPORT_ONLY=1 (no runs: the results file's tables again), RUNS (default 5), SIZES (MiB, default "32 64 128"), THRESHOLDS (default
// "1 5 10 25 50"), KEYS (default 1000000), OUT (default bench/results), TAG (default "vm").
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../test/e2e/hosts.js';
import { plot } from './lib/plot.js';
import { cell, percentile, rotation, summarize, windowLatencies } from './lib/stats.js';

const env = process.env;
const RUNS = Number(env.RUNS ?? 5);
const SIZES = (env.SIZES ?? '32 64 128').split(/\s+/).filter(Boolean).map(Number);
const THRESHOLDS = (env.THRESHOLDS ?? '1 5 10 25 50').split(/\s+/).filter(Boolean).map(Number);
const KEYS = Number(env.KEYS ?? 1_000_000);
const OUT = path.resolve(env.OUT ?? path.join(ROOT, 'bench/results'));
const TAG = env.TAG ?? 'vm';
const VM = path.join(ROOT, 'test/vm');
const SVC = '10.77.2.10/32';
const log = (s: string) => process.stderr.write(s + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Run {
  bench: 'scaling' | 'sweep' | 'predump' | 'methods' | 'converge' | 'chains' | 'encrypt';
  /** Replication (chains): each checkpoint's images, bytes, and freeze, ms; each pre-dump's bytes; the replica on vm2's disk. */
  checkpointBytes?: number[];
  checkpointFreezeMs?: number[];
  preDumpBytes?: number[];
  preDumpsSkipped?: number;
  replicaBytes?: number;
  /** Ours: the final dump's freezing and memory-dump times (CRIU's stats), ms. */
  finalFreezingMs?: number;
  finalMemdumpMs?: number;
  /** Ours: the final dump's time sending the pages (CRIU's memwrite), ms. */
  finalMemwriteMs?: number;
  /** ESP runs: bytes vm2's inbound SA decrypted (ip -s xfrm state). */
  espBytes?: number;
  /** Ours: the throttle per pre-dump, % (auto-converge). */
  throttlePct?: number[];
  /** Post-copy and hybrid: the lazy window, ms, and the pages it moved. */
  windowMs?: number;
  lazyPages?: number;
  /** Methods: the client's request latency during the lazy window, ms. */
  p50Ms?: number;
  p99Ms?: number;
  /** Ours: the container's memory as the report gives it. */
  memoryBytes?: number;
  point: string;
  x: number;
  rep: number;
  clientGapMs?: number;
  downtimeMs: number;
  predictedMs?: number;
  totalMs: number;
  preDumps?: number;
  finalPages?: number;
  stopReason?: string;
  /** When it ended (ISO). */
  at?: string;
  /** Ours: the tool's phases (pre-copy and switchover), ms. */
  phases?: Record<string, number>;
  /** Ours: CRIU's frozen time of each pre-dump, ms. */
  preFrozenMs?: number[];
  /** Ours: the transport the tool chose. */
  transport?: string;
  ok: boolean;
  note?: string;
}

async function vm(which: 'vm1' | 'vm2', command: string, timeoutMs = 900_000) {
  const r = await execa('bash', [path.join(VM, 'ssh.sh'), which, command], {
    reject: false,
    stdin: 'ignore',
    timeout: timeoutMs,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
async function must(which: 'vm1' | 'vm2', command: string): Promise<string> {
  const r = await vm(which, command);
  if (r.code !== 0) throw new Error(`${which}: ${command}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}
const shm = (name: string, file: string) =>
  `cat /proc/$(runc state ${name} | sed -n 's/^ *"pid": *\\([0-9]*\\).*/\\1/p')/root/dev/shm/${file} 2>/dev/null`;
const state = async (which: 'vm1' | 'vm2', name: string) =>
  (await vm(which, `runc state ${name}`)).stdout.match(/"status": "(\w+)"/)?.[1] ?? 'absent';

async function startVms(): Promise<void> {
  await execa('bash', [path.join(VM, 'install-deps.sh')], { stdin: 'ignore' });
  await execa('bash', [path.join(VM, 'build-image.sh')], { stdin: 'ignore', timeout: 1_200_000 });
  await execa('gcc', [
    '-static',
    '-O2',
    '-o',
    path.join(ROOT, 'dist/memwriter'),
    path.join(ROOT, 'examples/memwriter.c'),
  ]);
  // The Redis bundle is built here (Debian's redis-server and its libraries) and copied in.
  await execa('bash', [
    path.join(ROOT, 'examples/make-bundle.sh'),
    'redis',
    path.join(ROOT, '.bench/redis'),
    '/rm/bredis',
  ]);
  await execa('bash', [path.join(VM, 'start.sh')], { stdin: 'ignore', timeout: 600_000 });
}

/** Runs a command in vm1 and its wall time there (ns clock of the VM). */
async function timed(command: string): Promise<{ code: number; stdout: string; stderr: string; wallMs: number }> {
  const r = await vm(
    'vm1',
    `s=$(date +%s%N); ${command}; c=$?; echo "WALL $(( ($(date +%s%N) - s) / 1000000 ))"; exit $c`,
  );
  const wallMs = Number(r.stdout.match(/^WALL (\d+)/m)?.[1]);
  return { ...r, stdout: r.stdout.replace(/^WALL \d+\n?/m, ''), wallMs };
}

const naiveEnv = (name: string, tcp: boolean) =>
  `NAME=${name} DST=10.77.2.2 KEY=/root/.ssh/id_ed25519 KNOWN_HOSTS=/root/.ssh/known_hosts SRC_ROOT=/run/runc DST_ROOT=/run/runc BUNDLE=/root/bundles/${name} SVC=${tcp ? SVC : "''"} TCP=${tcp ? '--tcp-established' : "''"}`;

async function migrateBy(
  method: string,
  name: string,
  flags: string,
  tcp: boolean,
): Promise<Omit<Run, 'bench' | 'point' | 'x' | 'rep'>> {
  if (method === 'naive') {
    const r = await timed(`${naiveEnv(name, tcp)} bash /project/bench/scripts/naive.sh`);
    const mark = (k: string) => Number(r.stdout.match(new RegExp(`^${k} (\\d+)`, 'm'))?.[1]) / 1e6;
    return {
      downtimeMs: mark('T_RUNNING') - mark('T_FREEZE'),
      totalMs: r.wallMs,
      ok: r.code === 0,
      note: r.code ? r.stderr.slice(-300) : undefined,
    };
  }
  const r = await timed(
    `node /project/bin/migrate ${name} root@10.77.2.2 --json ${flags}${tcp ? ` --move-ip ${SVC}` : ''}`,
  );
  let j: any = {};
  try {
    j = JSON.parse(r.stdout);
  } catch {
    /* reported below */
  }
  return {
    downtimeMs: j.downtimeMs,
    predictedMs: j.predictedDowntimeMs,
    totalMs: r.wallMs,
    preDumps: j.iterations?.length ?? 0,
    finalPages: j.finalDump?.pagesWritten,
    finalFreezingMs: j.finalDump ? j.finalDump.freezingTimeUs / 1000 : undefined,
    finalMemdumpMs: j.finalDump ? j.finalDump.memdumpTimeUs / 1000 : undefined,
    finalMemwriteMs: j.finalDump ? j.finalDump.memwriteTimeUs / 1000 : undefined,
    throttlePct: (j.iterations ?? []).map((i: { throttlePct?: number }) => i.throttlePct ?? 0),
    stopReason: j.stopReason,
    preFrozenMs: (j.iterations ?? []).map((i: { frozenMs: number }) => i.frozenMs),
    windowMs: j.postCopy?.windowMs,
    lazyPages: j.postCopy?.pagesTotal,
    memoryBytes: j.memoryBytes,
    transport: j.transport,
    phases: Object.fromEntries(
      (j.phases ?? [])
        .filter((p: { name: string }) => !p.name.startsWith('preflight:'))
        .map((p: { name: string; ms: number }) => [p.name, p.ms]),
    ),
    ok: r.code === 0,
    note: r.code ? `exit ${r.code}: ${r.stderr.slice(-300)}` : undefined,
  };
}

/**
 * Migrates a fresh memwriter (MIB kept, RATE_KIB KiB/s rewritten, one word or with
 * WHOLE_PAGES a whole page at a time) from vm1 to vm2 by
 * METHOD with FLAGS, and checks what moved: it runs on vm2 only, counting on, its memory
 * check still "ok".
 */
async function migrateMemwriter(
  name: string,
  mib: number,
  rateKib: number,
  method: string,
  flags: string,
  wholePages = false,
): Promise<Omit<Run, 'bench' | 'point' | 'x' | 'rep'>> {
  for (const v of ['vm1', 'vm2'] as const) {
    await must(
      v,
      `runc delete -f ${name} >/dev/null 2>&1; ${wholePages ? 'WHOLE_PAGES=1 ' : ''}MEMWRITER_BIN=/project/dist/memwriter MEM_MIB=${mib} RATE_KIB=${rateKib} bash /project/examples/make-bundle.sh memwriter /root/bundles/${name} /rm/${name} >/dev/null`,
    );
  }
  await must('vm1', `runc run -d --bundle /root/bundles/${name} ${name} </dev/null >/dev/null 2>&1`);
  for (let i = 0; i < 400 && (await vm('vm1', shm(name, 'status'))).stdout.trim() !== 'ok'; i++) await sleep(500);
  const before = Number((await vm('vm1', shm(name, 'count'))).stdout.trim());
  const r = await migrateBy(method, name, flags, false);
  let ok = r.ok && (await state('vm1', name)) === 'absent' && (await state('vm2', name)) === 'running';
  let note = r.note;
  if (ok) {
    await sleep(1500);
    const after = Number((await vm('vm2', shm(name, 'count'))).stdout.trim());
    const st = (await vm('vm2', shm(name, 'status'))).stdout.trim();
    if (!(after > before) || st !== 'ok') (ok = false), (note = `count ${before} -> ${after}, status ${st}`);
  }
  await vm('vm2', `runc delete -f ${name}`);
  return { ...r, ok, note };
}

async function scaling(runs: Run[]): Promise<void> {
  const name = 'bmw';
  const methods = ['naive', 'one-shot', 'iterative'];
  for (const mib of SIZES) {
    for (let rep = 0; rep < RUNS; rep++) {
      for (const m of rotation(methods, rep)) {
        const r = await migrateMemwriter(name, mib, 256, m, m === 'naive' ? '' : `--${m}`);
        const run: Run = { bench: 'scaling', point: m, x: mib, rep, ...r };
        record(runs, run);
        log(
          `scaling ${mib} MiB ${m} #${rep + 1}: ${r.ok ? 'ok' : 'FAILED ' + r.note}; freeze-to-running ${Math.round(r.downtimeMs)} ms, total ${r.totalMs} ms, pre-dumps ${r.preDumps ?? '-'} (${r.stopReason ?? '-'})`,
        );
        write(runs);
      }
    }
  }
}

/** The smallest container (the counter), one-shot: the floor the other figures compare with. */
async function baseline(runs: Run[]): Promise<void> {
  const name = 'bcount';
  for (let rep = 0; rep < RUNS; rep++) {
    for (const v of ['vm1', 'vm2'] as const)
      await must(
        v,
        `runc delete -f ${name} >/dev/null 2>&1; bash /project/examples/make-bundle.sh counter /root/bundles/${name} /rm/${name} >/dev/null`,
      );
    await must('vm1', `runc run -d --bundle /root/bundles/${name} ${name} </dev/null >/dev/null 2>&1`);
    for (let i = 0; i < 100 && !(Number((await vm('vm1', shm(name, 'count'))).stdout.trim()) > 1); i++)
      await sleep(300);
    const before = Number((await vm('vm1', shm(name, 'count'))).stdout.trim());
    const r = await migrateBy('ours', name, '--one-shot', false);
    await sleep(1000);
    const after = Number((await vm('vm2', shm(name, 'count'))).stdout.trim());
    const ok = r.ok && (await state('vm1', name)) === 'absent' && after > before;
    record(runs, {
      bench: 'scaling',
      point: 'baseline',
      x: 0,
      rep,
      ...r,
      ok,
      note: ok ? r.note : (r.note ?? `count ${before} -> ${after}`),
    });
    log(
      `baseline counter #${rep + 1}: ${ok ? 'ok' : 'FAILED'}; freeze-to-running ${Math.round(r.downtimeMs)} ms, total ${r.totalMs} ms`,
    );
    await vm('vm2', `runc delete -f ${name}`);
    write(runs);
  }
}

/** Fresh Redis NAME on vm1 holding KEYS keys of VALUE bytes, on the service address; nothing of it on vm2. */
async function startRedis(name: string, keys: number, value?: number): Promise<void> {
  for (const v of ['vm1', 'vm2'] as const)
    await must(
      v,
      `runc delete -f ${name} >/dev/null 2>&1; ip addr del ${SVC} dev eth0 2>/dev/null; rm -rf /root/bundles/${name}; mkdir -p /root/bundles; cp -a /project/.bench/redis /root/bundles/${name}`,
    );
  await must(
    'vm1',
    `ip addr add ${SVC} dev eth0 && runc run -d --bundle /root/bundles/${name} ${name} </dev/null >/dev/null 2>&1`,
  );
  await must('vm2', 'ip neigh flush all');
  let up = false;
  for (let i = 0; i < 100 && !up; i++)
    up = (await vm('vm1', probe('do 127.0.0.1 6379 PING'))).stdout.includes('PONG') || (await sleep(300), false);
  await must('vm1', probe(`do 127.0.0.1 6379 DEBUG POPULATE ${keys} key${value ? ` ${value}` : ''}`));
}
const probe = (args: string) => `node /project/dist/bench/probe.js ${args}`;

/** The client on vm2, bound to vm2's own address (after the move the server is local there): a SET of a random key (CMD set) or a PING every 10 ms. */
async function startClient(keys: number, samples = false, cmd = 'set'): Promise<void> {
  await must(
    'vm2',
    `rm -f /tmp/probe.*; (${probe(`watch 10.77.2.10 6379 --cmd ${cmd} --keys ${keys} --every 10 --bind 10.77.2.2${samples ? ' --samples' : ''}`)} >/tmp/probe.out 2>/tmp/probe.err & echo $! >/tmp/probe.pid); for i in $(seq 100); do grep -q connected /tmp/probe.err && exit 0; sleep 0.1; done; exit 1`,
  );
}
interface Seen {
  maxGapMs?: number;
  gapEndsAtMs?: number;
  answered?: number;
  sent?: number;
  reconnects?: number;
  samples?: Array<[number, number]>;
}
async function stopClient(): Promise<Seen> {
  const r = await vm(
    'vm2',
    'kill -TERM $(cat /tmp/probe.pid); for i in $(seq 50); do [ -s /tmp/probe.out ] && break; sleep 0.1; done; cat /tmp/probe.out',
  );
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
  } catch {
    return {};
  }
}

/**
 * Moves a fresh Redis NAME (KEYS keys, of VALUE bytes) from vm1 to vm2 with FLAGS and
 * --move-ip, a client on vm2 (CMD, SAMPLES as startClient) talking to it all through;
 * checks that it runs on vm2 only with every key, and removes it there.
 */
async function migrateRedis(
  name: string,
  keys: number,
  flags: string,
  o: { value?: number; cmd?: string; samples?: boolean } = {},
) {
  await startRedis(name, keys, o.value);
  await startClient(keys, o.samples, o.cmd);
  await sleep(1000);
  const r = await migrateBy('ours', name, flags, true);
  await sleep(1500);
  const seen = await stopClient();
  let ok = r.ok && (await state('vm1', name)) === 'absent' && (await state('vm2', name)) === 'running';
  let note = r.note;
  const dbsize = Number((await vm('vm2', probe('do 127.0.0.1 6379 DBSIZE'))).stdout.trim());
  if (ok && dbsize !== keys) (ok = false), (note = `DBSIZE ${dbsize} on the destination, expected ${keys}`);
  await vm('vm2', `runc delete -f ${name}; ip addr del ${SVC} dev eth0 2>/dev/null`);
  return { r, seen, ok, note };
}

async function sweep(runs: Run[]): Promise<void> {
  const name = 'bredis';
  const points = [
    ...THRESHOLDS.map((t) => ({ label: `threshold ${t}%`, x: t, flags: `--iterative --threshold ${t}%` })),
    { label: 'max-downtime (default rule)', x: 0, flags: '--iterative' },
    { label: 'one-shot', x: -1, flags: '--one-shot' },
  ];
  for (let rep = 0; rep < RUNS; rep++) {
    for (const p of rotation(points, rep)) {
      const { r, seen, ok, note: checked } = await migrateRedis(name, KEYS, p.flags);
      let note = checked;
      if (ok && seen.reconnects) note = `client reconnected ${seen.reconnects} time(s)`;
      const run: Run = { bench: 'sweep', point: p.label, x: p.x, rep, clientGapMs: seen.maxGapMs, ...r, ok, note };
      record(runs, run);
      log(
        `sweep ${p.label} #${rep + 1}: ${ok ? 'ok' : 'FAILED ' + note}; client gap ${seen.maxGapMs} ms (answered ${seen.answered}/${seen.sent}), freeze-to-running ${Math.round(r.downtimeMs)} ms, total ${r.totalMs} ms, pre-dumps ${r.preDumps} (${r.stopReason ?? '-'}), final ${r.finalPages} pages`,
      );
      write(runs);
    }
  }
}

/** Pre-dump modes against each other: the tasks' frozen time per pre-dump, and what it does to the rest. */
async function predump(runs: Run[]): Promise<void> {
  const name = 'bpd';
  const mib = Number(env.PREDUMP_MIB ?? 64);
  const modes = ['splice', 'read'];
  for (let rep = 0; rep < RUNS; rep++) {
    for (const m of rotation(modes, rep)) {
      const r = await migrateMemwriter(name, mib, 1024, 'ours', `--iterative --pre-dump-mode ${m}`);
      record(runs, { bench: 'predump', point: m, x: mib, rep, ...r });
      log(
        `predump ${m} #${rep + 1}: ${r.ok ? 'ok' : 'FAILED ' + r.note}; pre-dumps frozen ${JSON.stringify(r.preFrozenMs?.map(Math.round))} ms, freeze-to-running ${Math.round(r.downtimeMs)} ms, total ${r.totalMs} ms (${r.transport})`,
      );
      write(runs);
    }
  }
}

/**
 * The four methods against one another on Redis (METHODS_SIZES MB of 1000-byte values)
 * with a client sending METHODS_CMD (ping, or set: a random key) every 10 ms from vm2 on
 * the moved address; and the counter one-shot as the floor. Each run checks DBSIZE on
 * the destination. PING by default: under TCG a SET every 10 ms faults a page about every
 * 45 ms, and CRIU's daemon pushes in the background only while no fault waits (32 MB:
 * 2695 single-page faults in 123 s of window, the push starved).
 */
const METHODS_CMD = env.METHODS_CMD ?? 'ping';
async function methodsBench(runs: Run[]): Promise<void> {
  const sizes = (env.METHODS_SIZES ?? '32 128 256').split(/\s+/).filter(Boolean).map(Number);
  const methods: Array<[string, string]> = [
    ['cold', '--one-shot'],
    ['pre-copy', '--iterative'],
    ['post-copy', '--post-copy'],
    ['hybrid', '--hybrid'],
  ];
  const name = 'bme';
  for (let rep = 0; rep < RUNS; rep++) {
    const counter = 'bcount';
    for (const v of ['vm1', 'vm2'] as const)
      await must(
        v,
        `runc delete -f ${counter} >/dev/null 2>&1; bash /project/examples/make-bundle.sh counter /root/bundles/${counter} /rm/${counter} >/dev/null`,
      );
    await must('vm1', `runc run -d --bundle /root/bundles/${counter} ${counter} </dev/null >/dev/null 2>&1`);
    await sleep(1500);
    const c = await migrateBy('ours', counter, '--one-shot', false);
    record(runs, { bench: 'methods', point: 'counter', x: 0, rep, ...c });
    log(
      `methods: counter one-shot #${rep + 1}: ${c.ok ? 'ok' : 'FAILED'}; freeze-to-running ${Math.round(c.downtimeMs)} ms`,
    );
    await vm('vm2', `runc delete -f ${counter}`);
    write(runs);
    for (const mb of sizes) {
      const keys = mb * 1000;
      for (const [m, flags] of rotation(methods, rep)) {
        const moved = await migrateRedis(name, keys, flags, { value: 1000, cmd: METHODS_CMD, samples: true });
        const { r, seen } = moved;
        let { ok, note } = moved;
        if (ok && seen.reconnects) (ok = false), (note = `the client reconnected ${seen.reconnects} time(s)`);
        const inWindow = windowLatencies(seen.samples, seen.gapEndsAtMs, r.windowMs);
        const run: Run = {
          bench: 'methods',
          point: m,
          x: mb,
          rep,
          clientGapMs: seen.maxGapMs,
          p50Ms: percentile(inWindow, 50),
          p99Ms: percentile(inWindow, 99),
          ...r,
          ok,
          note,
        };
        record(runs, run);
        log(
          `methods ${mb} MB ${m} #${rep + 1}: ${ok ? 'ok' : 'FAILED ' + note}; client gap ${seen.maxGapMs} ms, freeze-to-running ${Math.round(r.downtimeMs)} ms, ` +
            `window ${Math.round(r.windowMs ?? NaN)} ms (${r.lazyPages ?? '-'} pages, p50 ${run.p50Ms ?? '-'} p99 ${run.p99Ms ?? '-'} ms over ${inWindow.length} requests), ` +
            `total ${r.totalMs} ms, ${r.preDumps} pre-dumps, final ${r.finalPages ?? '-'} pages (${r.transport}, ${Math.round((r.memoryBytes ?? NaN) / 1048576)} MiB)`,
        );
        write(runs);
      }
    }
  }
}

/** The page server's port in the encrypt runs (the tool's default, named so the ESP policy matches it). */
const ENCRYPT_PORT = 27027;
/** ESP's AEAD algorithms (ip xfrm's names) and their key lengths in bytes, salt included. */
const ESP_ALGOS: Record<string, { alg: string; keyBytes: number }> = {
  'esp-gcm': { alg: 'rfc4106(gcm(aes))', keyBytes: 20 },
  'esp-chacha': { alg: 'rfc7539esp(chacha20,poly1305)', keyBytes: 36 },
};

/**
 * ip xfrm commands for one host (vm1 sends the pages, vm2 receives them): both SAs (fresh
 * keys) and the two policies that put the page connection, and only it, under ESP in
 * transport mode, level required (no SA: dropped, never clear).
 */
function espSetup(on: 'vm1' | 'vm2', algo: string, keys: [string, string]): string {
  const { alg } = ESP_ALGOS[algo];
  const a = '10.77.2.1';
  const b = '10.77.2.2';
  const p = ENCRYPT_PORT;
  const tmpl = (src: string, dst: string, reqid: number) =>
    `tmpl src ${src} dst ${dst} proto esp reqid ${reqid} mode transport level required`;
  const toDst = `src ${a} dst ${b} proto tcp dport ${p}`;
  const toSrc = `src ${b} dst ${a} proto tcp sport ${p}`;
  return [
    'modprobe -a xfrm_user esp4',
    `ip xfrm state add src ${a} dst ${b} proto esp spi 0x5a01 reqid 1 mode transport aead '${alg}' 0x${keys[0]} 128`,
    `ip xfrm state add src ${b} dst ${a} proto esp spi 0x5a02 reqid 2 mode transport aead '${alg}' 0x${keys[1]} 128`,
    `ip xfrm policy add ${toDst} dir ${on === 'vm1' ? 'out' : 'in'} ${tmpl(a, b, 1)}`,
    `ip xfrm policy add ${toSrc} dir ${on === 'vm1' ? 'in' : 'out'} ${tmpl(b, a, 2)}`,
  ].join(' && ');
}

/** vm2's inbound SA (vm1 to vm2): the bytes it decrypted, from ip -s xfrm state. */
async function espBytesIn(): Promise<number | undefined> {
  const out = await must('vm2', 'ip -s xfrm state get src 10.77.2.1 dst 10.77.2.2 proto esp spi 0x5a01');
  const m = out.match(/lifetime current:\s*\n\s*(\d+)\(bytes\)/);
  return m ? Number(m[1]) : undefined;
}

/** The encrypt bench's page connections, in the order of its table. */
const ENCRYPT_POINTS = ['direct', 'tls', 'tunnel', 'esp-gcm', 'esp-chacha'];

/** The final dump's pages over CRIU's memwrite time, MiB/s (NaN without either). */
const memwriteMiBps = (r: Pick<Run, 'finalPages' | 'finalMemwriteMs'>): number =>
  r.finalPages && r.finalMemwriteMs ? (r.finalPages * 4096) / 1048576 / (r.finalMemwriteMs / 1000) : NaN;

async function encrypt(runs: Run[]): Promise<void> {
  const mib = Number(env.ENCRYPT_MIB ?? 128);
  const name = 'benc';
  const clear = 'ip xfrm policy flush; ip xfrm state flush';
  for (let rep = 0; rep < RUNS; rep++) {
    for (const point of rotation(ENCRYPT_POINTS, rep)) {
      const esp = point in ESP_ALGOS;
      for (const v of ['vm1', 'vm2'] as const) await vm(v, clear);
      if (esp) {
        const keys: [string, string] = [0, 1].map(() =>
          crypto.randomBytes(ESP_ALGOS[point].keyBytes).toString('hex'),
        ) as [string, string];
        for (const v of ['vm1', 'vm2'] as const) await must(v, espSetup(v, point, keys));
      }
      const transport = esp ? 'direct' : point;
      let r: Awaited<ReturnType<typeof migrateMemwriter>>;
      let espBytes: number | undefined;
      try {
        r = await migrateMemwriter(
          name,
          mib,
          256,
          'ours',
          `--one-shot --transport ${transport} --page-server-port ${ENCRYPT_PORT}`,
        );
        if (esp) espBytes = await espBytesIn();
      } finally {
        // The policies drop the port's clear traffic: they never outlive the run (KEEP_VMS=1).
        for (const v of ['vm1', 'vm2'] as const) await vm(v, clear);
      }
      let { ok, note } = r;
      if (esp) {
        const pages = (r.finalPages ?? 0) * 4096;
        if (ok && !(espBytes !== undefined && espBytes >= pages))
          (ok = false), (note = `vm2's ESP SA counted ${espBytes ?? 'no'} bytes, the pages were ${pages}`);
      }
      record(runs, { bench: 'encrypt', point, x: mib, rep, ...r, espBytes, ok, note });
      const mbps = memwriteMiBps(r);
      log(
        `encrypt ${mib} MiB ${point} #${rep + 1}: ${ok ? 'ok' : `FAILED ${note}`}; memwrite ${Math.round(r.finalMemwriteMs ?? NaN)} ms (${mbps.toFixed(1)} MiB/s), dump ${Math.round(r.phases?.dump ?? NaN)} ms, freeze-to-running ${Math.round(r.downtimeMs)} ms${esp ? `, ESP ${espBytes} bytes` : ''}`,
      );
      write(runs);
    }
  }
}

/**
 * Auto-converge against plain pre-copy on a memwriter that does not converge
 * (CONVERGE_MIB, default 48, rewritten a whole page at a time at 128 MiB/s: every page
 * dirty again by the next pre-dump), alternating; the downtime and where it goes.
 */
async function converge(runs: Run[]): Promise<void> {
  const mib = Number(env.CONVERGE_MIB ?? 48);
  const flags = '--iterative --transport direct --max-downtime 300 --max-iterations 14';
  const points: Array<[string, string]> = [
    ['pre-copy', flags],
    ['auto-converge', `${flags} --auto-converge`],
  ];
  for (let rep = 0; rep < RUNS; rep++) {
    for (const [p, f] of rotation(points, rep)) {
      const r = await migrateMemwriter('bcv', mib, 128 * 1024, 'ours', f, true);
      record(runs, { bench: 'converge', point: p, x: mib, rep, ...r });
      log(
        `converge ${p} #${rep + 1}: ${r.ok ? 'ok' : 'FAILED ' + r.note}; ${r.preDumps} pre-dumps (${r.stopReason}), throttle ${r.throttlePct?.join(' ')}, final ${r.finalPages} pages, ` +
          `freeze-to-running ${Math.round(r.downtimeMs)} ms (dump ${Math.round(r.phases?.dump ?? NaN)}, freezing ${Math.round(r.finalFreezingMs ?? NaN)}, memdump ${Math.round(r.finalMemdumpMs ?? NaN)}, copy (with the files' final delta) ${Math.round(r.phases?.copy ?? NaN)}, restore ${Math.round(r.phases?.restore ?? NaN)})`,
      );
      write(runs);
    }
  }
}

async function chains(runs: Run[]): Promise<void> {
  const mib = Number(env.CHAINS_MIB ?? 32);
  const forS = env.CHAINS_FOR ?? '120s';
  const name = 'bch';
  for (let rep = 0; rep < RUNS; rep++) {
    for (const length of rotation([1, 3], rep)) {
      await must('vm2', `runc delete -f ${name} >/dev/null 2>&1; rm -rf /var/lib/runc-migrate/replicas/${name}`);
      await must(
        'vm1',
        `runc delete -f ${name} >/dev/null 2>&1; MEMWRITER_BIN=/project/dist/memwriter MEM_MIB=${mib} RATE_KIB=1024 bash /project/examples/make-bundle.sh memwriter /root/bundles/${name} /rm/${name} >/dev/null && runc run -d --bundle /root/bundles/${name} ${name} </dev/null >/dev/null 2>&1`,
      );
      for (let i = 0; i < 400 && (await vm('vm1', shm(name, 'status'))).stdout.trim() !== 'ok'; i++) await sleep(500);
      const t = await timed(
        `node /project/bin/migrate replicate ${name} root@10.77.2.2 --interval 5s --chain-length ${length} --for ${forS} --json`,
      );
      const events = t.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const cps = events.filter((e) => e.event === 'checkpoint');
      const pre = events.filter((e) => e.event === 'pre-dump');
      const du = Number((await vm('vm2', `du -sb /var/lib/runc-migrate/replicas/${name}`)).stdout.split('\t')[0]);
      const freeze = cps.map((c) => c.freezeMs as number);
      const r: Run = {
        bench: 'chains',
        point: `chain ${length}`,
        x: mib,
        rep,
        ok: t.code === 0 && cps.length > 0,
        note: t.code === 0 ? undefined : `exit ${t.code}: ${t.stderr.slice(-300)}`,
        downtimeMs: percentile(freeze, 50) ?? NaN,
        totalMs: t.wallMs,
        checkpointBytes: cps.map((c) => c.bytes as number),
        checkpointFreezeMs: freeze,
        preDumpBytes: pre.map((p) => p.bytes as number),
        preDumpsSkipped: events.filter((e) => e.event === 'pre-dump-skipped').length,
        replicaBytes: du,
      };
      record(runs, r);
      log(
        `chains ${length} #${rep + 1}: ${r.ok ? 'ok' : `FAILED ${r.note}`}; checkpoints ${cps.length}, bytes ${r.checkpointBytes?.join(' ')}, freeze ${freeze.join(' ')}; pre-dumps ${r.preDumpBytes?.join(' ')} (skipped ${r.preDumpsSkipped}); replica ${du}`,
      );
      await vm('vm1', `runc delete -f ${name}; rm -rf /dev/shm/runc-migrate-replica.*`);
      await vm('vm2', `rm -rf /var/lib/runc-migrate/replicas/${name}`);
      write(runs);
    }
  }
}

let began = new Date();
function record(runs: Run[], r: Run): void {
  runs.push({ ...r, at: new Date().toISOString() });
}
function write(runs: Run[]): void {
  const ats = runs.flatMap((r) => (r.at ? [r.at] : [])).sort();
  const good = runs.filter((r) => r.ok);
  const of = (b: string, point: string, x: number, f: (r: Run) => number | undefined) =>
    good
      .filter((r) => r.bench === b && r.point === point && r.x === x)
      .map(f)
      .filter((v): v is number => v !== undefined && Number.isFinite(v));
  let md = `# Pre-copy in the VMs: scaling and the threshold sweep\n\n`;
  md += `Hosts: two QEMU VMs (test/vm: Debian 12 kernel with soft-dirty tracking, TCG software emulation, 1 vCPU and ${env.RM_VM_MEM_MB ?? 1024} MiB each, linked by a QEMU socket netdev) on one 2-core machine; the CLI and the naive script run inside vm1. `;
  md += `Runs from ${(ats[0] ?? began.toISOString()).slice(0, 16)}Z to ${(ats[ats.length - 1] ?? '').slice(11, 16)}Z; ${RUNS} runs per point, the methods rotated each run. TCG makes everything 10-50 times slower than hardware: compare the methods with one another, not with other machines.\n\n`;
  md +=
    'Cells: median (min-max). *freeze-to-running*: ours as reported; naive: `runc checkpoint` started to `runc restore` returned. *total*: command start to exit, measured in vm1.\n\n';
  const failed = runs.filter((r) => !r.ok);
  if (failed.length)
    md += `Failed runs, left out: ${failed.map((r) => `${r.bench} ${r.point} ${r.x} #${r.rep + 1}: ${r.note}`).join('; ')}\n\n`;
  const base = good.filter((r) => r.point === 'baseline');
  if (base.length)
    md += `Baseline: the counter (a busybox shell loop), one-shot, freeze-to-running ${cell(base.map((r) => r.downtimeMs))} ms, total ${cell(base.map((r) => r.totalMs))} ms.\n\n`;
  const sc = good.filter((r) => r.bench === 'scaling' && r.point !== 'baseline');
  if (sc.length) {
    md +=
      '## Scaling: memwriter, 256 KiB/s rewritten\n\n| memory | method | freeze-to-running, ms | total, ms | pre-dumps | final dump, pages | stop |\n|---|---|---|---|---|---|---|\n';
    for (const x of [...new Set(sc.map((r) => r.x))].sort((a, b) => a - b)) {
      for (const m of ['naive', 'one-shot', 'iterative']) {
        const rs = sc.filter((r) => r.x === x && r.point === m);
        if (!rs.length) continue;
        md += `| ${x} MiB | ${m} | ${cell(of('scaling', m, x, (r) => r.downtimeMs))} | ${cell(of('scaling', m, x, (r) => r.totalMs))} | ${m === 'naive' ? '-' : cell(of('scaling', m, x, (r) => r.preDumps))} | ${m === 'naive' ? '-' : cell(of('scaling', m, x, (r) => r.finalPages))} | ${[...new Set(rs.map((r) => r.stopReason ?? '-'))].join(', ')} |\n`;
      }
    }
    md += '\n| memory | one-shot / naive | iterative / naive | iterative / one-shot |\n|---|---|---|---|\n';
    for (const x of [...new Set(sc.map((r) => r.x))].sort((a, b) => a - b)) {
      const med = (m: string) => summarize(of('scaling', m, x, (r) => r.downtimeMs)).median;
      md += `| ${x} MiB | ${(med('one-shot') / med('naive')).toFixed(2)} | ${(med('iterative') / med('naive')).toFixed(2)} | ${(med('iterative') / med('one-shot')).toFixed(2)} |\n`;
    }
    md += `\n![downtime against memory](${TAG}-scaling.png)\n\n`;
  }
  const sw = good.filter((r) => r.bench === 'sweep');
  if (sw.length) {
    md += `## Threshold sweep: Redis, ${KEYS} keys (DEBUG POPULATE), a client SETting a random key every 10 ms from vm2\n\n`;
    md +=
      '| rule | client gap, ms | freeze-to-running, ms | predicted, ms | total, ms | pre-dumps | final dump, pages | stop |\n|---|---|---|---|---|---|---|---|\n';
    for (const p of [...new Set(sw.map((r) => `${r.x}|${r.point}`))].sort(
      (a, b) => Number(a.split('|')[0]) - Number(b.split('|')[0]),
    )) {
      const [xs, label] = p.split('|');
      const x = Number(xs);
      const rs = sw.filter((r) => r.point === label);
      md += `| ${label} | ${cell(of('sweep', label, x, (r) => r.clientGapMs))} | ${cell(of('sweep', label, x, (r) => r.downtimeMs))} | ${cell(of('sweep', label, x, (r) => r.predictedMs))} | ${cell(of('sweep', label, x, (r) => r.totalMs))} | ${cell(of('sweep', label, x, (r) => r.preDumps))} | ${cell(of('sweep', label, x, (r) => r.finalPages))} | ${[...new Set(rs.map((r) => r.stopReason ?? '-'))].join(', ')} |\n`;
    }
    md += `\n![downtime and total time against the threshold](${TAG}-sweep.png)\n\n`;
  }
  const pd = good.filter((r) => r.bench === 'predump');
  if (pd.length) {
    md += `## Pre-dump mode: memwriter ${pd[0].x} MiB, 1 MiB/s rewritten, iterative\n\n`;
    md +=
      "*frozen*: CRIU's frozen time of a pre-dump (the tasks stopped), all pre-dumps of all runs; *first*: the first pre-dump's (all the memory).\n\n";
    md +=
      '| --pre-dump-mode | frozen per pre-dump, ms | first pre-dump frozen, ms | freeze-to-running, ms | total, ms | pre-dumps |\n|---|---|---|---|---|---|\n';
    for (const m of ['splice', 'read']) {
      const rs = pd.filter((r) => r.point === m);
      if (!rs.length) continue;
      md += `| ${m} | ${cell(rs.flatMap((r) => r.preFrozenMs ?? []))} | ${cell(rs.map((r) => r.preFrozenMs?.[0] ?? NaN))} | ${cell(rs.map((r) => r.downtimeMs))} | ${cell(rs.map((r) => r.totalMs))} | ${cell(rs.map((r) => r.preDumps ?? NaN))} |\n`;
    }
    md += '\n';
  }
  const me = good.filter((r) => r.bench === 'methods');
  if (me.length) {
    const counter = me.filter((r) => r.point === 'counter').map((r) => r.downtimeMs);
    const base = summarize(counter).median;
    md += `## The four methods: Redis (1000-byte values) with a client sending ${METHODS_CMD === 'set' ? 'a SET of a random key' : 'a PING'} every 10 ms from vm2 on one connection (transport auto; --move-ip)\n\n`;
    md += `Baseline, the counter one-shot: freeze-to-running ${cell(counter)} ms. *client gap*: the client's longest time between two answers. *window*: the lazy window; *lazy pages*: pages it moved; *p50/p99*: latency of the requests sent during the window. *transport*: as \`auto\` chose it (below 48 MiB of images the stream through the tool's SSH connection, slow under TCG). Every run checked DBSIZE on vm2 and that the client kept its one connection.\n\n`;
    md +=
      '| Redis | memory, MiB | method | transport | client gap, ms | freeze-to-running, ms | / baseline | window, ms | lazy pages | p50 / p99 in window, ms | final dump, pages | pre-dumps | total, ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n';
    for (const x of [...new Set(me.filter((r) => r.point !== 'counter').map((r) => r.x))].sort((a, b) => a - b)) {
      for (const m of ['cold', 'pre-copy', 'post-copy', 'hybrid']) {
        const rs = me.filter((r) => r.point === m && r.x === x);
        if (!rs.length) continue;
        const d = summarize(rs.map((r) => r.downtimeMs)).median;
        const mem = summarize(rs.map((r) => (r.memoryBytes ?? NaN) / 1048576)).median;
        const lat = rs.some((r) => r.p50Ms !== undefined)
          ? `${cell(
              rs.map((r) => r.p50Ms ?? NaN),
              1,
            )} / ${cell(
              rs.map((r) => r.p99Ms ?? NaN),
              1,
            )}`
          : '-';
        md += `| ${x} MB | ${Number.isFinite(mem) ? mem.toFixed(0) : '-'} | ${m} | ${[...new Set(rs.map((r) => r.transport ?? '-'))].join(', ')} | ${cell(rs.map((r) => r.clientGapMs ?? NaN))} | ${cell(rs.map((r) => r.downtimeMs))} | ${(d / base).toFixed(2)} | ${cell(rs.map((r) => r.windowMs ?? NaN))} | ${cell(rs.map((r) => r.lazyPages ?? NaN))} | ${lat} | ${cell(rs.map((r) => r.finalPages ?? NaN))} | ${cell(rs.map((r) => r.preDumps ?? NaN))} | ${cell(rs.map((r) => r.totalMs))} |\n`;
      }
    }
    md += '\n';
  }
  const cv = good.filter((r) => r.bench === 'converge');
  if (cv.length) {
    md += `## Auto-converge: memwriter ${cv[0].x} MiB rewritten a whole page at a time at 128 MiB/s (does not converge), --transport direct, --max-downtime 300, --max-iterations 14\n\n`;
    md +=
      "*dump*: the final dump (runc checkpoint to its end); *freezing*, *memdump*: CRIU's own figures of it. The rest of freeze-to-running is mostly the images' copy, the rootfs' final delta and the restore.\n\n";
    md +=
      '| method | freeze-to-running, ms | final dump, pages | pre-dumps | dump, ms | freezing, ms | memdump, ms | copy, ms | sync, ms | restore, ms | stop |\n|---|---|---|---|---|---|---|---|---|---|---|\n';
    for (const m of ['pre-copy', 'auto-converge']) {
      const rs = cv.filter((r) => r.point === m);
      if (!rs.length) continue;
      const ph = (k: string) => cell(rs.map((r) => r.phases?.[k] ?? NaN));
      md += `| ${m} | ${cell(rs.map((r) => r.downtimeMs))} | ${cell(rs.map((r) => r.finalPages ?? NaN))} | ${cell(rs.map((r) => r.preDumps ?? NaN))} | ${ph('dump')} | ${cell(rs.map((r) => r.finalFreezingMs ?? NaN))} | ${cell(rs.map((r) => r.finalMemdumpMs ?? NaN))} | ${ph('copy')} | ${ph('sync')} | ${ph('restore')} | ${[...new Set(rs.map((r) => r.stopReason ?? '-'))].join(', ')} |\n`;
    }
    const ac = cv.filter((r) => r.point === 'auto-converge');
    if (ac.length)
      md += `\nThrottle per pre-dump (%), each auto-converge run: ${ac.map((r) => (r.throttlePct ?? []).join(' ')).join('; ')}.\n`;
    md += '\n';
  }
  const ch = good.filter((r) => r.bench === 'chains');
  if (ch.length) {
    md += `## Replication with pre-dump chains: memwriter ${ch[0].x} MiB, 1 MiB/s rewritten, \`migrate replicate --interval 5s\`\n\n`;
    md +=
      "Per run, every checkpoint and pre-dump of one replicate run. *images*: what a checkpoint's dump sent (with chains, only what was written since its chain's last pre-dump; each chain's first pre-dump is whole, as a chain starts with no parent). Under TCG a checkpoint or pre-dump takes longer than the interval, so they follow one another; the freeze is mostly the files' sync over the emulated link (0.6 s on the namespace hosts). *freeze*: CRIU's frozen time of a checkpoint, the files' sync inside it. *replica*: `du` of vm2's replica directory at the end (`--keep 2`, their chains). Cells: median (min-max) over the checkpoints after the first.\n\n";
    md +=
      '| chain length | checkpoints | first checkpoint, MB | later checkpoints, MB | freeze, ms | pre-dumps (skipped) | per pre-dump, MB | replica on disk, MB |\n|---|---|---|---|---|---|---|---|\n';
    for (const point of ['chain 1', 'chain 3']) {
      for (const r of ch.filter((x) => x.point === point)) {
        const cb = (r.checkpointBytes ?? []).map((b) => b / 1e6);
        md += `| ${point.slice(6)} | ${cb.length} | ${(cb[0] ?? NaN).toFixed(1)} | ${cell(cb.slice(1), 1)} | ${cell((r.checkpointFreezeMs ?? []).slice(1))} | ${(r.preDumpBytes ?? []).length} (${r.preDumpsSkipped ?? 0}) | ${cell(
          (r.preDumpBytes ?? []).map((b) => b / 1e6),
          1,
        )} | ${((r.replicaBytes ?? NaN) / 1e6).toFixed(1)} |\n`;
      }
    }
    md += '\n';
  }
  const en = good.filter((r) => r.bench === 'encrypt');
  if (en.length) {
    md += `## The page connection's encryption: memwriter ${en[0].x} MiB, one-shot\n\n`;
    md +=
      "*memwrite*: CRIU's time sending the final dump's pages (its stats); *throughput*: the pages' bytes over it. *esp-gcm*, *esp-chacha*: `--transport direct` with the page server's port under IPsec ESP in transport mode (AES-GCM-128, ChaCha20-Poly1305), each run's SAs made with fresh keys; an ESP run counts only when vm2's SA decrypted at least the pages' bytes. Under TCG (qemu64: no AES-NI) every cipher runs in emulated software: compare the methods with one another.\n\n";
    md +=
      '| page connection | memwrite, ms | throughput, MiB/s | dump, ms | copy, ms | restore, ms | freeze-to-running, ms | total, ms | runs |\n|---|---|---|---|---|---|---|---|---|\n';
    for (const point of ENCRYPT_POINTS) {
      const rs = en.filter((r) => r.point === point);
      if (!rs.length) continue;
      const ph = (k: string) => cell(rs.map((r) => r.phases?.[k] ?? NaN));
      const tp = rs.map(memwriteMiBps);
      md += `| ${point} | ${cell(rs.map((r) => r.finalMemwriteMs ?? NaN))} | ${cell(tp, 1)} | ${ph('dump')} | ${ph('copy')} | ${ph('restore')} | ${cell(rs.map((r) => r.downtimeMs))} | ${cell(rs.map((r) => r.totalMs))} | ${rs.length} |\n`;
    }
    md += '\n';
  }
  md += `Every run: \`${TAG}.jsonl\`.\n`;
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), md);
  fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

async function plots(runs: Run[]): Promise<void> {
  const good = runs.filter((r) => r.ok);
  const sc = good.filter((r) => r.bench === 'scaling' && r.point !== 'baseline');
  if (new Set(sc.map((r) => r.x)).size > 1) {
    await plot({
      file: path.join(OUT, `${TAG}-scaling.png`),
      title: 'memwriter (256 KiB/s rewritten), VMs: freeze-to-running against memory',
      xlabel: 'memory kept, MiB',
      ylabel: 'freeze-to-running, ms',
      logx: true,
      series: ['naive', 'one-shot', 'iterative'].map((m) => ({
        title: m,
        points: [...new Set(sc.map((r) => r.x))]
          .sort((a, b) => a - b)
          .map((x) => ({ x, values: sc.filter((r) => r.x === x && r.point === m).map((r) => r.downtimeMs) })),
      })),
    });
  }
  const sw = good.filter((r) => r.bench === 'sweep' && r.x > 0);
  if (sw.length) {
    const xs = [...new Set(sw.map((r) => r.x))].sort((a, b) => a - b);
    const series = (title: string, f: (r: Run) => number | undefined) => ({
      title,
      points: xs.map((x) => ({ x, values: sw.filter((r) => r.x === x).map((r) => f(r) ?? NaN) })),
    });
    await plot({
      file: path.join(OUT, `${TAG}-sweep.png`),
      title: `Redis ${KEYS} keys, VMs: threshold (% of the first dump) against time`,
      xlabel: 'threshold, % of the first pre-dump',
      ylabel: 'ms',
      logx: true,
      logy: true,
      series: [
        series('client gap', (r) => r.clientGapMs),
        series('freeze-to-running', (r) => r.downtimeMs),
        series('total', (r) => r.totalMs),
      ],
    });
  }
}

async function main(): Promise<void> {
  const which = process.argv.slice(2);
  // predump runs only when named.
  const want = (b: string) =>
    (which.length === 0 && !['predump', 'methods', 'converge', 'chains', 'encrypt'].includes(b)) || which.includes(b);
  began = new Date();
  // The figures of the benchmarks not run now are kept (one results file for both).
  const file = path.join(OUT, `${TAG}.jsonl`);
  const runs: Run[] = fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Run)
        .filter((r) => env.REPORT_ONLY === '1' || !want(r.bench))
    : [];
  if (env.REPORT_ONLY === '1') {
    // The tables and plots again from the runs file (after runs were joined or dropped by hand).
    write(runs);
    await plots(runs).catch((e) => log(`plot: ${e.message}`));
    return;
  }
  const kept = runs.length;
  await startVms();
  try {
    if (want('encrypt')) await encrypt(runs);
    if (want('predump')) await predump(runs);
    if (want('converge')) await converge(runs);
    if (want('chains')) await chains(runs);
    if (want('methods')) await methodsBench(runs);
    if (want('sweep')) await sweep(runs);
    if (want('scaling')) await baseline(runs);
    if (want('scaling')) await scaling(runs);
  } finally {
    write(runs);
    await plots(runs).catch((e) => log(`plot: ${e.message}`));
    if (env.KEEP_VMS !== '1') await execa('bash', [path.join(VM, 'stop.sh')], { stdin: 'ignore', reject: false });
  }
  log(`results: ${path.join(OUT, `${TAG}.md`)}`);
  // Only this run's failures count (a kept failed run is in the results file's notes).
  if (runs.slice(kept).some((r) => !r.ok)) process.exitCode = 1;
}

main().catch((e) => {
  log(`vm: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
