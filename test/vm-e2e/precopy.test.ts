// Iterative pre-copy, end to end, between two QEMU VMs running Debian's stock kernel
// (it tracks dirty memory; this machine's kernel does not). The CLI runs inside vm1 from
// the project shared at /project and migrates real containers to vm2 over SSH.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const VM = path.join(ROOT, 'test/vm');
const MEMWRITER = path.join(ROOT, 'dist/memwriter');

async function vm(which: 'vm1' | 'vm2', command: string, timeoutMs = 300_000) {
  const r = await execa('bash', [path.join(VM, 'ssh.sh'), which, command], {
    reject: false,
    stdin: 'ignore',
    timeout: timeoutMs,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A file in the container's own /dev/shm (it moves with the container), read from the VM. */
const shm = (name: string, file: string) =>
  `cat /proc/$(runc state ${name} | sed -n 's/^ *"pid": *\\([0-9]*\\).*/\\1/p')/root/dev/shm/${file} 2>/dev/null`;

async function must(which: 'vm1' | 'vm2', command: string) {
  const r = await vm(which, command);
  assert.equal(r.code, 0, `${which}: ${command}\n${r.stderr}`);
  return r.stdout;
}

/** The bundle on vm1, started there; none on vm2: the migration makes it there (config.json and the synced rootfs). */
async function startMemwriter(name: string, mib: number, rateKib: number, wholePages = false): Promise<void> {
  await must('vm2', `runc delete -f ${name} >/dev/null 2>&1; rm -rf /root/bundles/${name}`);
  await must(
    'vm1',
    `runc delete -f ${name} >/dev/null 2>&1; ${wholePages ? 'WHOLE_PAGES=1 ' : ''}MEMWRITER_BIN=/project/dist/memwriter MEM_MIB=${mib} RATE_KIB=${rateKib} bash /project/examples/make-bundle.sh memwriter /root/bundles/${name} /rm/${name} >/dev/null`,
  );
  await must('vm1', `runc run -d --bundle /root/bundles/${name} ${name} </dev/null >/dev/null 2>&1`);
  // Wait until it has touched all its memory and checked it once.
  for (let i = 0; i < 200; i++) {
    const s = await vm('vm1', shm(name, 'status'));
    if (s.stdout.trim() === 'ok') return;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.fail(`${name} did not start`);
}

async function migrateInVm(name: string, flags: string) {
  const count = (v: 'vm1' | 'vm2') => vm(v, shm(name, 'count')).then((x) => Number(x.stdout.trim()));
  const atStart = await count('vm1');
  const r = await vm('vm1', `node /project/bin/migrate ${name} root@10.77.2.2 --json ${flags}`, 600_000);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const report = JSON.parse(r.stdout);
  // The memory moved whole: the destination's copy checks every page each tick and says
  // "ok" again after the restore (it ticks on from the source's count).
  const first = await count('vm2');
  assert.ok(first >= atStart, `the counter went from ${atStart} to ${first}: restarted?`);
  let after = first;
  for (let i = 0; i < 100 && after <= first + 1; i++) {
    await new Promise((r) => setTimeout(r, 300));
    after = await count('vm2');
  }
  assert.ok(after > first + 1, 'the counter does not tick on the destination');
  // At least two ticks ran on the destination, each checking every page.
  assert.equal((await vm('vm2', shm(name, 'status'))).stdout.trim(), 'ok', 'memory check on the destination');
  assert.match((await vm('vm1', `runc state ${name} 2>&1`)).stdout, /does not exist/);
  assert.match(await must('vm2', `runc state ${name}`), /"status": "running"/);
  // The bundle was made on vm2 from vm1's: its config.json and the rootfs, synced.
  assert.equal(report.files?.createdConfig, true, JSON.stringify(report.files));
  assert.equal(
    await must('vm2', `sha256sum < /root/bundles/${name}/rootfs/bin/memwriter`),
    await must('vm1', `sha256sum < /root/bundles/${name}/rootfs/bin/memwriter`),
  );
  return report;
}

before(async () => {
  await execa('bash', [path.join(VM, 'install-deps.sh')], { stdin: 'ignore' });
  await execa('bash', [path.join(VM, 'build-image.sh')], { stdin: 'ignore', timeout: 1_200_000 });
  fs.mkdirSync(path.dirname(MEMWRITER), { recursive: true });
  await execa('gcc', ['-static', '-O2', '-o', MEMWRITER, path.join(ROOT, 'examples/memwriter.c')]);
  await execa('bash', [path.join(VM, 'start.sh')], { stdin: 'ignore', timeout: 600_000 });
});

after(async () => {
  await execa('bash', [path.join(VM, 'stop.sh')], { stdin: 'ignore', reject: false });
});

describe('iterative pre-copy between VMs with dirty-memory tracking', () => {
  test('converges: several pre-dumps, shrinking, a final dump far smaller than a one-shot one', async () => {
    await must('vm1', 'criu check --feature mem_dirty_track');
    // 64 MiB: the one-shot dump is all of it, the iterative one a few ticks' pages.
    await startMemwriter('mwi', 64, 256);
    await startMemwriter('mwo', 64, 256);
    const it = await migrateInVm('mwi', '--iterative');
    const one = await migrateInVm('mwo', '--one-shot');
    const its = it.iterations as Array<{ pagesWritten: number; predictedDowntimeMs?: number }>;
    const phases = (r: { phases: Array<{ name: string; ms: number }> }) =>
      r.phases
        .filter((p) => ['page-server', 'dump', 'copy', 'restore'].includes(p.name))
        .map((p) => `${p.name} ${Math.round(p.ms)}`)
        .join(', ');
    process.stderr.write(`# iterative phases: ${phases(it)}; one-shot phases: ${phases(one)}\n`);
    process.stderr.write(
      `# iterative: ${its.length} pre-dumps, pages written ${its.map((i) => i.pagesWritten).join(' > ')}, final ${it.finalDump?.pagesWritten}; ` +
        `downtime ${it.downtimeMs} ms (predicted ${it.predictedDowntimeMs}), total ${it.totalMs} ms, stop: ${it.stopReason}\n` +
        `# one-shot: final ${one.finalDump?.pagesWritten} pages; downtime ${one.downtimeMs} ms, total ${one.totalMs} ms\n`,
    );
    assert.equal(it.mode, 'iterative');
    assert.equal(one.mode, 'one-shot');
    // auto: pre-copy through CRIU's TLS (both VMs have it, vm1 has openssl).
    assert.equal(it.transport, 'tls', it.transportWhy);
    assert.equal(one.transport, 'tls', one.transportWhy);
    assert.ok(its.length >= 2, `only ${its.length} pre-dump(s)`);
    for (const later of its.slice(1))
      assert.ok(later.pagesWritten < its[0].pagesWritten, 'a later iteration wrote as much as the first');
    assert.ok(
      it.finalDump.pagesWritten * 5 < one.finalDump.pagesWritten,
      `final dump ${it.finalDump.pagesWritten} pages vs one-shot ${one.finalDump.pagesWritten}`,
    );
    assert.ok(typeof it.predictedDowntimeMs === 'number');
    assert.ok(it.downtimeMs < one.downtimeMs, 'pre-copy did not shorten the downtime');
    await must('vm2', 'runc delete -f mwi; runc delete -f mwo');
  });

  test('SIGINT during pre-copy: exit 130, the container runs on the source only, nothing left on either VM', async () => {
    await startMemwriter('mws', 64, 256);
    const r = await must(
      'vm1',
      'node /project/bin/migrate mws root@10.77.2.2 --iterative --max-downtime 1 2>/tmp/mws.err & pid=$!; ' +
        'for i in $(seq 600); do grep -q "pre-dump 1" /tmp/mws.err && break; sleep 0.1; done; ' +
        'kill -INT $pid; wait $pid; echo "exit=$?"; cat /tmp/mws.err',
    );
    assert.match(r, /exit=130/, r);
    assert.match(r, /interrupted by SIGINT before the freeze/);
    assert.match(await must('vm1', 'runc state mws'), /"status": "running"/);
    assert.match((await vm('vm2', 'runc state mws 2>&1')).stdout, /does not exist/);
    for (const v of ['vm1', 'vm2'] as const) {
      const left = await vm(
        v,
        'ls -d /dev/shm/runc-migrate.* 2>/dev/null; pgrep -af "[c]riu page-server|[t]ls-keeper|[p]ort-guard"; grep "[r]unc-migrate" /proc/mounts; iptables -S | grep "[r]unc-migrate"',
      );
      assert.equal(left.stdout.trim(), '', `${v} keeps: ${left.stdout}`);
    }
    const before = Number((await vm('vm1', shm('mws', 'count'))).stdout.trim());
    await new Promise((res) => setTimeout(res, 1500));
    assert.ok(Number((await vm('vm1', shm('mws', 'count'))).stdout.trim()) > before, 'the source stopped counting');
    await must('vm1', 'runc delete -f mws');
  });

  // --auto-converge: the container's CPU quota (cgroup v2 cpu.max in the VMs).
  const cpuMax = (name: string) =>
    `cat /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$(runc state ${name} | sed -n 's/^ *"pid": *\\([0-9]*\\).*/\\1/p')/cgroup)/cpu.max`;

  // Without auto-converge first: a memwriter dirtying faster than the link stops pre-copy
  // early (not at --max-iterations), and says so.
  test('does not converge when memory is dirtied faster than the link: stops early and says so; auto-converge throttles such a memwriter until its dirty set shrinks, its pages check clean on the destination, the throttle is gone', async () => {
    // 96 MiB, 128 MiB/s rewritten a whole page at a time (dirtying costs CPU, as in an
    // application): every page is dirty again by the next pre-dump. At 99 % the memwriter
    // still finishes a 12.8 MiB tick (3276 pages) now and then, one or two of them in the
    // final dump's window: the buffer is large enough for that to stay under half of it.
    await startMemwriter('mwn', 96, 128 * 1024, true);
    await startMemwriter('mwa', 96, 128 * 1024, true);
    const flags = '--iterative --transport direct --max-downtime 300 --max-iterations 16';
    const plain = await migrateInVm('mwn', flags);
    const before = (await must('vm1', cpuMax('mwa'))).trim();
    const ac = await migrateInVm('mwa', `${flags} --auto-converge`);
    const its = ac.iterations as Array<{ pagesWritten: number; throttlePct?: number }>;
    process.stderr.write(
      `# without: ${plain.iterations.length} pre-dumps (${plain.iterations.map((i: { pagesWritten: number }) => i.pagesWritten).join(' ')}), ${plain.stopReason}, final dump ${plain.finalDump.pagesWritten} pages, downtime ${plain.downtimeMs} ms\n` +
        `# auto-converge: ${its.length} pre-dumps, pages ${its.map((i) => i.pagesWritten).join(' ')}, throttle ${its.map((i) => i.throttlePct ?? 0).join(' ')} %, ${ac.stopReason}: ${ac.stopWhy}; final dump ${ac.finalDump.pagesWritten} pages, downtime ${ac.downtimeMs} ms\n`,
    );
    assert.equal(plain.stopReason, 'not-converging');
    assert.ok(plain.iterations.length < 8, `it went on towards --max-iterations: ${plain.iterations.length}`);
    assert.ok(
      plain.warnings.some((w: string) => /did not converge/.test(w)),
      plain.warnings.join(' | '),
    );
    const t = its.map((i) => i.throttlePct ?? 0);
    assert.equal(
      t.find((x) => x > 0),
      20,
      `the throttle starts at 20 %: ${t.join(' ')}`,
    );
    for (let i = 1; i < t.length; i++)
      assert.ok(
        t[i] >= t[i - 1] && t[i] <= 99 && (t[i - 1] === 0 || t[i] - t[i - 1] <= 10),
        `steps of 10 %, at most 99 %: ${t.join(' ')}`,
      );
    assert.ok(
      its[its.length - 1].pagesWritten * 2 < its[0].pagesWritten,
      `the dirty set did not shrink: ${its.map((i) => i.pagesWritten).join(' ')}`,
    );
    assert.ok(
      ac.finalDump.pagesWritten * 2 < plain.finalDump.pagesWritten,
      `final dump ${ac.finalDump.pagesWritten} pages against ${plain.finalDump.pagesWritten} without`,
    );
    // Lifted before the final dump: the restored copy runs unthrottled (migrateInVm checked its pages).
    assert.equal((await must('vm2', cpuMax('mwa'))).trim(), before);
    await must('vm2', 'runc delete -f mwn; runc delete -f mwa');
  });

  test('auto-converge: the throttle is gone after a failed restore and after SIGINT', async () => {
    await startMemwriter('mwt', 48, 128 * 1024, true);
    const original = (await must('vm1', cpuMax('mwt'))).trim();
    // A restore that fails: the source resumes, unthrottled.
    const f = await vm(
      'vm1',
      'RUNC_MIGRATE_FAIL_AT=restore node /project/bin/migrate mwt root@10.77.2.2 --json --iterative --transport direct --max-downtime 300 --max-iterations 6 --auto-converge',
    );
    assert.equal(f.code, 4, f.stderr);
    const its = JSON.parse(f.stdout).iterations as Array<{ throttlePct?: number }>;
    assert.ok(
      its.some((i) => (i.throttlePct ?? 0) > 0),
      `it never throttled: ${JSON.stringify(its)}`,
    );
    assert.equal((await must('vm1', cpuMax('mwt'))).trim(), original, 'throttled after the rollback');
    // SIGINT while throttled (the second pre-dump runs under the throttle set after the first measured rate).
    const r = await must(
      'vm1',
      'node /project/bin/migrate mwt root@10.77.2.2 --iterative --transport direct --max-downtime 1 --max-iterations 12 --auto-converge 2>/tmp/mwt.err & pid=$!; ' +
        'for i in $(seq 900); do grep -q "auto-converge:" /tmp/mwt.err && break; sleep 0.1; done; ' +
        `t=$(${cpuMax('mwt')}); kill -INT $pid; wait $pid; echo "exit=$?"; echo "during=$t"; cat /tmp/mwt.err`,
    );
    assert.match(r, /exit=130/, r);
    assert.doesNotMatch(r, new RegExp(`during=${original}\\n`), `not throttled while pre-copy ran: ${r}`);
    assert.equal((await must('vm1', cpuMax('mwt'))).trim(), original, 'throttled after SIGINT');
    assert.equal((await vm('vm1', 'pgrep -af "[t]hrottle-keeper"')).stdout.trim(), '');
    await must('vm1', 'runc delete -f mwt');
  });

  test('files changed after the pre-sync, by a writer outside the container, arrive after pre-copy exactly (--verify-files)', async () => {
    const name = 'mwf';
    await startMemwriter(name, 32, 256);
    const root = `/root/bundles/${name}/rootfs`;
    // A tree the writer changes: files with an old time stamp, a linked pair, a directory.
    await must(
      'vm1',
      `mkdir -p ${root}/srv/d/e && cd ${root}/srv && for i in 1 2 3 4 5; do echo "file $i" > f$i; done && ln f1 d/l1 && echo deep > d/e/x && touch -d @1577836800 f1 f2 f3 d/e/x`,
    );
    const gate = `/tmp/gate-${name}`;
    await must('vm1', `rm -f ${gate} ${gate}.reached`);
    const run = vm(
      'vm1',
      `RUNC_MIGRATE_PAUSE_AT=presynced:${gate} node /project/bin/migrate ${name} root@10.77.2.2 --json --iterative --verify-files`,
      600_000,
    );
    for (let i = 0; i < 600 && (await vm('vm1', `test -e ${gate}.reached`)).code !== 0; i++)
      await new Promise((r) => setTimeout(r, 200));
    // Same-size rewrites with the time stamp set back, through either name of a linked
    // pair; a chown through one name; a directory moved and written in; a deletion; a
    // directory replaced by a file; a symlink; a FIFO.
    await must(
      'vm1',
      `cd ${root}/srv && printf 'FILE 2\n' > f2 && touch -d @1577836800 f2 && printf 'FILE 1\n' > d/l1 && touch -d @1577836800 d/l1 && chown 1234:1234 f1 ` +
        `&& mv d/e d/moved && echo more > d/moved/y && rm f4 && rm -rf d/moved2 && mkdir q && rmdir q && echo was-a-dir > q && ln -s f3 s && mkfifo p && chmod 600 f5 && touch ${gate}`,
    );
    const r = await run;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const j = JSON.parse(r.stdout);
    process.stderr.write(
      `# files after pre-copy: presync ${j.files.presync.map((p: { ms: number }) => Math.round(p.ms)).join(' + ')} ms; final delta ${Math.round(j.files.final.ms)} ms (${j.files.final.how}, ${j.files.final.engine}, ${j.files.final.listed} entries), verify ${Math.round(j.files.final.verify.ms)} ms\n`,
    );
    assert.equal(j.mode, 'iterative');
    assert.equal(j.files.presync.length, 2, 'the files were synced again after pre-copy');
    assert.equal(j.files.final.how, 'log');
    assert.equal(j.files.final.verify.differences, 0);
    // The test's own look: contents, owner and link of what changed.
    const look =
      'cd /root/bundles/mwf/rootfs/srv && cat f1 f2 d/l1 d/moved/y q && stat -c "%n %u %h %a" f1 d/l1 f5 && readlink s && test -p p && test ! -e f4 && test ! -e d/e';
    assert.equal(await must('vm2', look), await must('vm1', look));
    await must('vm2', `runc delete -f ${name}`);
  });

  test('hybrid: pre-copy, then post-copy for what is left; the lazy window moves only what changed since the last pre-dump', async () => {
    await startMemwriter('mwh', 32, 256);
    const r = await migrateInVm('mwh', '--hybrid');
    const its = r.iterations as Array<{ pagesWritten: number }>;
    process.stderr.write(
      `# hybrid: ${its.length} pre-dumps (${its.map((i) => i.pagesWritten).join(' ')}), ${r.stopReason}; downtime ${r.downtimeMs} ms; lazy window ${r.postCopy.windowMs} ms, ` +
        `${r.postCopy.pagesTotal} pages (${r.postCopy.pagesOnDemand} on demand); phases ${(
          r.phases as Array<{ name: string; ms: number }>
        )
          .filter((p) => ['dump', 'copy', 'sync', 'window', 'restore', 'pages'].includes(p.name))
          .map((p) => `${p.name} ${Math.round(p.ms)}`)
          .join(', ')}\n`,
    );
    assert.equal(r.mode, 'hybrid');
    assert.equal(r.transport, 'tls');
    assert.ok(its.length >= 2, `only ${its.length} pre-dump(s)`);
    // The final dump moved no memory, and the lazy window only the last pre-dump's dirty set.
    assert.ok(
      r.postCopy.pagesTotal * 4 < its[0].pagesWritten,
      `lazy pages ${r.postCopy.pagesTotal} against the first pre-dump's ${its[0].pagesWritten}`,
    );
    assert.ok(
      r.finalDump === undefined || r.finalDump.pagesWritten < 64,
      `the final dump wrote ${r.finalDump?.pagesWritten} pages`,
    );
    const left = await vm('vm2', 'ls -d /dev/shm/runc-migrate.* 2>/dev/null; pgrep -af "[l]azy-pages"');
    assert.equal(left.stdout.trim(), '', `vm2 keeps: ${left.stdout}`);
    await must('vm2', 'runc delete -f mwh');
  });

  // Hybrid's post-copy under the tool's death, after the pre-dumps: the guard and the
  // source's watchdog end the window alone, and the watchdog runs migrate recover for the
  // source's side. The container ends on exactly one VM, its memory checked whole there.
  // One point per outcome: postcopy-faults.test.ts kills plain post-copy at all four
  // (restoring and window-ended too) on the namespace hosts; what hybrid adds is the
  // pre-dumps' chain under the lazy restore.
  const kills = [
    { point: 'window-open', endsOn: 'vm1' },
    { point: 'window', endsOn: 'vm2' },
  ] as const;
  kills.forEach((k, n) => {
    test(`hybrid, SIGKILL at ${k.point} after the pre-dumps: the container ends on ${k.endsOn} alone, its memory whole; recover then finds nothing`, async () => {
      const name = `mwk${n}`;
      // Smaller than the hybrid test's: the same steps, a shorter run.
      await startMemwriter(name, 8, 256);
      const r = await vm(
        'vm1',
        `RUNC_MIGRATE_KILL_AT=${k.point}:SIGKILL node /project/bin/migrate ${name} root@10.77.2.2 --json --hybrid`,
        600_000,
      );
      assert.notEqual(r.code, 0, `the tool died at ${k.point}`);
      const recorded = async () => (await vm('vm1', `test -e /run/runc-migrate/${name}.json`)).code === 0;
      for (let i = 0; i < 240 && (await recorded()); i++) await new Promise((res) => setTimeout(res, 500));
      assert.equal(await recorded(), false, 'settled without migrate recover (the record is gone)');
      const other = k.endsOn === 'vm1' ? 'vm2' : 'vm1';
      assert.match(await must(k.endsOn, `runc state ${name}`), /"status": "running"/);
      assert.match((await vm(other, `runc state ${name} 2>&1`)).stdout, /does not exist/);
      // Whole: it ticks on, checking every page each tick.
      const count = async () => Number((await vm(k.endsOn, shm(name, 'count'))).stdout.trim());
      const c0 = await count();
      let c1 = c0;
      for (let i = 0; i < 100 && c1 <= c0 + 1; i++) {
        await new Promise((res) => setTimeout(res, 300));
        c1 = await count();
      }
      assert.ok(c1 > c0 + 1, `the counter does not tick on ${k.endsOn}`);
      assert.equal((await vm(k.endsOn, shm(name, 'status'))).stdout.trim(), 'ok', `memory check on ${k.endsOn}`);
      const rec = await vm('vm1', `node /project/bin/migrate recover ${name} root@10.77.2.2 --json`);
      assert.equal(JSON.parse(rec.stdout).outcome, 'nothing-to-recover', rec.stderr);
      for (const v of ['vm1', 'vm2'] as const) {
        const left = await vm(
          v,
          'ls -d /dev/shm/runc-migrate.* /var/tmp/runc-migrate.* 2>/dev/null; pgrep -af "[l]azy-pages|[w]atchdog.sh"',
        );
        assert.equal(left.stdout.trim(), '', `${v} keeps: ${left.stdout}`);
      }
      await must(k.endsOn, `runc delete -f ${name}`);
    });
  });

  test('replicate with pre-dump chains, then failover after the source dies: the memory restored through the chain checks clean', async (t) => {
    const name = 'vmrep';
    await startMemwriter(name, 16, 64);
    await must('vm2', `runc delete -f ${name} >/dev/null 2>&1; rm -rf /var/lib/runc-migrate/replicas/${name}`);
    // In the background on vm1 (SSH returns): its events go to a file.
    await must(
      'vm1',
      `rm -f /root/rep.out; nohup node /project/bin/migrate replicate ${name} root@10.77.2.2 --interval 5s --chain-length 3 --json > /root/rep.out 2> /root/rep.err < /dev/null & echo started`,
    );
    const events = async () =>
      (await vm('vm1', 'cat /root/rep.out')).stdout
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    let chained: Record<string, unknown> | undefined;
    for (let i = 0; i < 150 && !chained; i++) {
      chained = (await events()).find((e) => e.event === 'checkpoint' && typeof e.chain === 'string');
      if (!chained) await new Promise((r) => setTimeout(r, 2000));
    }
    const all = await events();
    assert.ok(chained, `no checkpoint parented on a chain: ${JSON.stringify(all).slice(0, 2000)}`);
    const pre = all.filter((e) => e.event === 'pre-dump' && e.chain === chained?.chain);
    // Up to two pre-dumps before the checkpoint (chain length 3; one skipped when the lease's count was short).
    assert.ok(pre.length >= 1 && pre.length <= 2, JSON.stringify(pre));
    // The checkpoint (and a second pre-dump) carry only what was written since: far less than the first.
    for (const p of pre.slice(1)) assert.ok((p.bytes as number) < (pre[0].bytes as number) / 2, JSON.stringify(pre));
    assert.ok((chained.bytes as number) < (pre[0].bytes as number) / 2, JSON.stringify(chained));
    const fig = (e: Record<string, unknown>) => `${e.bytes} B, frozen ${e.frozenMs ?? e.freezeMs} ms`;
    t.diagnostic(
      `chain ${chained.chain}: ${pre.map((p) => `pre-dump ${fig(p)}`).join('; ')}; checkpoint ${fig(chained)}`,
    );
    // The source dies: the tool and its fence killed, then the container.
    const atKill = Number((await vm('vm1', shm(name, 'count'))).stdout.trim());
    await vm(
      'vm1',
      `pkill -KILL -f 'migrate replicate'; pkill -KILL -f runc-migrate-fence; runc kill ${name} KILL; sleep 1; runc delete -f ${name}`,
    );
    const r = await vm('vm2', `node /project/bin/migrate failover ${name} local --watch --json`, 300_000);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const restored = JSON.parse(r.stdout) as { restored: { seq: number } };
    assert.ok(restored.restored.seq >= (chained.seq as number));
    const count = async () => Number((await vm('vm2', shm(name, 'count'))).stdout.trim());
    const c0 = await count();
    assert.ok(c0 > 0 && c0 <= atKill + 50, `restored at ${c0}, killed at ${atKill}`);
    let c1 = c0;
    for (let i = 0; i < 100 && c1 <= c0 + 1; i++) {
      await new Promise((res) => setTimeout(res, 300));
      c1 = await count();
    }
    assert.ok(c1 > c0 + 1, 'the restored memwriter ticks on');
    assert.equal(
      (await vm('vm2', shm(name, 'status'))).stdout.trim(),
      'ok',
      'every page checks clean after the restore',
    );
    await must('vm2', `runc delete -f ${name}; rm -rf /var/lib/runc-migrate/replicas/${name}`);
    await vm('vm1', 'rm -rf /dev/shm/runc-migrate-replica.*');
  });
});
