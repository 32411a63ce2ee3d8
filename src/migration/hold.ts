// The transactional switchover's hinge. The final checkpoint runs with a CRIU action
// script (through CRIU_CONFIG_FILE) that, at post-dump, holds: every image is written,
// the tasks are still frozen and their TCP connections locked, and `runc checkpoint`
// waits. The tool copies, restores and verifies meanwhile, then writes its verdict:
//   commit   -> the script exits 0, CRIU finishes, runc destroys the source;
//   rollback -> the script exits 1, the dump "fails", the source resumes where it was.
// If the tool dies while holding, the script rolls back by itself (the source is the
// copy known to be whole), as it does after holdTimeoutS.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import type { WorkPaths } from './paths.js';

export function holdScript(p: WorkPaths, cliPid: number, timeoutS: number): string {
  const ticks = timeoutS * 50; // 20 ms each
  return `#!/bin/sh
# runc-migrate: holds the frozen source at CRIU's post-dump until the verdict.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
# Fault injection for the tests: the dump fails after every image is written.
[ "$RUNC_MIGRATE_FAIL_AT" = dump ] && exit 1
: > '${p.dumpedMarker}'
# The verdict file is created exclusively (noclobber here, O_EXCL in the tool): whoever
# decides first, the tool or this script on its own, decides for both.
set -C
i=0
while [ ! -s '${p.verdictFile}' ]; do
	if ! kill -0 ${cliPid} 2>/dev/null; then echo rollback-orphaned 2>/dev/null > '${p.verdictFile}'; sleep 0.02; continue; fi
	i=$((i + 1))
	if [ "$i" -gt ${ticks} ]; then echo rollback-timeout 2>/dev/null > '${p.verdictFile}'; sleep 0.02; continue; fi
	sleep 0.02
done
[ "$(cat '${p.verdictFile}')" = commit ]
`;
}

export function criuConfig(p: WorkPaths): string {
  return `action-script ${p.holdScript}\n`;
}

export async function writeHold(p: WorkPaths, cliPid: number, timeoutS: number): Promise<Record<string, string>> {
  await fs.mkdir(p.holdDir, { recursive: true, mode: 0o700 });
  await fs.writeFile(p.holdScript, holdScript(p, cliPid, timeoutS), { mode: 0o700 });
  await fs.writeFile(p.criuConfig, criuConfig(p), { mode: 0o600 });
  return { CRIU_CONFIG_FILE: p.criuConfig };
}

/**
 * Resolves 'dumped' once the script holds, or 'exited' if the checkpoint ended first
 * (the dump failed, and CRIU resumed the tasks).
 */
export async function waitDumped(p: WorkPaths, checkpointDone: Promise<unknown>): Promise<'dumped' | 'exited'> {
  let exited = false;
  checkpointDone.then(
    () => (exited = true),
    () => (exited = true),
  );
  for (;;) {
    if (existsSync(p.dumpedMarker)) return 'dumped';
    if (exited) return existsSync(p.dumpedMarker) ? 'dumped' : 'exited';
    await new Promise((r) => setTimeout(r, 3));
  }
}

/**
 * Gives the verdict unless the script gave one first (it rolls back on its own when the
 * hold times out). Returns the verdict in force: only 'commit' means the source goes.
 */
export async function verdict(p: WorkPaths, v: 'commit' | 'rollback'): Promise<string> {
  try {
    await fs.writeFile(p.verdictFile, v + '\n', { flag: 'wx' });
    return v;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    for (let i = 0; i < 100; i++) {
      const text = (await fs.readFile(p.verdictFile, 'utf8')).trim();
      if (text) return text;
      await new Promise((r) => setTimeout(r, 5));
    }
    return 'rollback-unknown';
  }
}
