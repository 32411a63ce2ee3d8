// The tool checks both hosts share: installed, new enough, and what criu check says.
import { compareVersions, MIN_CRIU_VERSION, parseCriuVersion } from '../../criu.js';
import { PreflightError } from '../../errors.js';
import type { Host } from '../../host.js';
import { MIN_RUNC_VERSION, parseRuncVersion } from '../../runc.js';

export async function toolVersion(host: Host, argv: string[], tool: string, flag: string): Promise<string> {
  let r;
  try {
    r = await host.run(argv, { allowFail: true, timeoutMs: 20_000 });
  } catch (err) {
    r = { code: 127, stdout: '', stderr: (err as Error).message };
  }
  if (r.code === 127 || (/not found|No such file|ENOENT/i.test(r.stderr) && r.code !== 0)) {
    throw new PreflightError(
      `${tool} is not installed on the ${host.name} (${argv[0]} not found)`,
      `Install ${tool} there${tool === 'criu' ? ` (${MIN_CRIU_VERSION} or newer)` : ''}, or give its path with ${flag} PATH.`,
    );
  }
  const v = tool === 'criu' ? parseCriuVersion(r.stdout) : parseRuncVersion(r.stdout);
  if (r.code !== 0 || !v) {
    throw new PreflightError(
      `${tool} on the ${host.name} did not report its version (${argv.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)})`,
      `Check the ${tool} installation on the ${host.name}.`,
    );
  }
  const min = tool === 'criu' ? MIN_CRIU_VERSION : MIN_RUNC_VERSION;
  if (compareVersions(v, min) < 0) {
    throw new PreflightError(
      `${tool} ${v} on the ${host.name} is too old: ${min} or newer is needed` +
        (tool === 'criu' ? ' (older CRIU cannot dump TCP/IP sockets on kernels from 6.16)' : ''),
      `Install ${tool} ${min} or newer on the ${host.name}${tool === 'criu' ? ' (Debian: the criu package from unstable; see README "Requirements")' : ''}, or point ${flag} at it.`,
    );
  }
  return v;
}

export async function criuCheck(host: Host, bin: string): Promise<string> {
  const r = await host.run([bin, 'check'], { allowFail: true, timeoutMs: 30_000 });
  const out = `${r.stdout}${r.stderr}`;
  if (r.code !== 0 || !/Looks good/.test(out)) {
    const errs = out
      .split('\n')
      .filter((l) => /Error|error/.test(l))
      .slice(0, 3)
      .join(' | ');
    throw new PreflightError(
      `criu check failed on the ${host.name}: ${errs || out.trim().split('\n').pop()}`,
      `This kernel lacks features CRIU needs: run criu check there for details (a newer kernel or CRIU may help), or --force to try anyway.`,
    );
  }
  return 'looks good';
}

/**
 * What a host says about CRIU's kernel probe cache (criu.kdat: its filesystem type, then
 * "cached" and "leftover" when there): the kernel is probed on every CRIU run unless it is
 * cached, which CRIU does only on a tmpfs and never past a criu.kdat.tmp a killed CRIU left.
 */
export const kdatProbe = [
  'sh',
  '-c',
  'stat -f -c %T /run 2>/dev/null; [ -e /run/criu.kdat ] && echo cached; [ -e /run/criu.kdat.tmp ] && echo leftover; :',
];

/** Pure: the warning for a host where CRIU cannot cache its kernel probe (undefined when it does). */
export function kdatWarning(out: string, hostName: string): string | undefined {
  const lines = out.trim().split('\n');
  if (lines.includes('cached')) return undefined;
  const cost = `every restore there probes the kernel again, about 60 ms more downtime on our test hosts`;
  // (Where /run is not a tmpfs, CRIU leaves criu.kdat.tmp behind itself: that is not the cause.)
  const fs = lines[0]?.trim();
  if (fs && fs !== 'tmpfs')
    return `CRIU on the ${hostName} cannot cache its kernel probe: /run is ${fs}, not a tmpfs (CRIU keeps the cache only on one); ${cost}.`;
  if (lines.includes('leftover'))
    return `CRIU on the ${hostName} cannot cache its kernel probe: /run/criu.kdat.tmp was left by a CRIU killed while writing it, and CRIU never writes past it; ${cost}. Remove it there: rm /run/criu.kdat.tmp`;
  return undefined;
}
