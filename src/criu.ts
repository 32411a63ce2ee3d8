// Every criu command line the tool runs is built here, and criu's output parsed here.
// Pure: no I/O.

export const criu = {
  version: (bin: string) => [bin, '--version'],
  help: (bin: string) => [bin, '--help'],
  checkFeature: (bin: string, feature: string) => [bin, 'check', '--feature', feature],
  cpuinfoDump: (bin: string, dir: string) => [bin, 'cpuinfo', 'dump', '--images-dir', dir],
  cpuinfoCheck: (bin: string, dir: string) => [bin, 'cpuinfo', 'check', '--images-dir', dir],

  /**
   * A page server in the foreground: it writes a NUL to stdout (--status-fd 1) once it
   * listens, and exits after one dump; exit 0 means every page arrived.
   */
  pageServer(
    bin: string,
    o: {
      imagesDir: string;
      workDir: string;
      address: string;
      port: number;
      logFile: string;
      prevImagesDir?: string;
      tls?: { caCert: string; cert: string; key: string };
    },
  ): string[] {
    const argv = [
      bin,
      'page-server',
      '--images-dir',
      o.imagesDir,
      '--work-dir',
      o.workDir,
      '--address',
      o.address,
      '--port',
      String(o.port),
      '--status-fd',
      '1',
      '--log-file',
      o.logFile,
      '-v4',
    ];
    // --auto-dedup: pages a later pre-dump sends again are punched out of the earlier
    // images, so the destination holds about one copy of the memory however many
    // iterations pre-copy takes (without it a working set rewritten each time filled a
    // VM's tmpfs at the tenth pre-dump).
    if (o.prevImagesDir) argv.push('--prev-images-dir', o.prevImagesDir, '--auto-dedup');
    // Mutual TLS: it accepts only a dumper whose certificate this migration's CA signed.
    if (o.tls) argv.push('--tls', '--tls-cacert', o.tls.caCert, '--tls-cert', o.tls.cert, '--tls-key', o.tls.key);
    return argv;
  },

  /**
   * Post-copy, on the destination: the lazy-pages daemon in the foreground. It listens on
   * lazy-pages.socket in WORKDIR for the restore, fetches pages from the source's lazy page
   * server (TLS) as the restored tasks fault on them and pushes the rest, and exits 0 once
   * every page arrived. -v4: its log counts the faults (lazyFigures).
   */
  lazyPages(
    bin: string,
    o: {
      imagesDir: string;
      workDir: string;
      address: string;
      port: number;
      logFile: string;
      tls: { caCert: string; cert: string; key: string };
    },
  ): string[] {
    return [
      bin,
      'lazy-pages',
      '--page-server',
      '--address',
      o.address,
      '--port',
      String(o.port),
      '--images-dir',
      o.imagesDir,
      '--work-dir',
      o.workDir,
      '--log-file',
      o.logFile,
      '-v4',
      '--tls',
      '--tls-cacert',
      o.tls.caCert,
      '--tls-cert',
      o.tls.cert,
      '--tls-key',
      o.tls.key,
    ];
  },
};

/** The socket the lazy-pages daemon listens on, in its work directory (CRIU's fixed name). */
export const LAZY_SOCKET = 'lazy-pages.socket';

/**
 * The lazy-pages daemon's figures, from its -v4 log: pages the restored tasks faulted on
 * (fetched on demand), and pages copied in all (per process: "UFFD transferred pages:
 * (copied/total)"); the rest were pushed in the background.
 */
export function lazyFigures(log: string): { onDemand: number; transferred: number; total: number } {
  const onDemand = (log.match(/#PF at /g) ?? []).length;
  let transferred = 0;
  let total = 0;
  for (const m of log.matchAll(/UFFD transferred pages: \((\d+)\/(\d+)\)/g)) {
    transferred += Number(m[1]);
    total += Number(m[2]);
  }
  return { onDemand: Math.min(onDemand, transferred || onDemand), transferred, total };
}

/** Whether criu --help lists the TLS options: CRIU compiles them in only when built with gnutls. */
export function criuHasTls(help: string): boolean {
  return help.includes('--tls-cacert');
}

/** "Version: 4.2.1" -> "4.2.1" (also "Version: 4.2" and GitID lines). */
export function parseCriuVersion(stdout: string): string | undefined {
  return stdout.match(/Version:\s*(\d+(?:\.\d+)+)/)?.[1];
}

/** Compares dotted versions numerically: -1, 0 or 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** The first `Error (` lines of a CRIU log: what the user sees when CRIU fails. */
export function criuLogErrors(log: string, max = 5): string[] {
  return log
    .split('\n')
    .filter((l) => l.includes('Error ('))
    .slice(0, max);
}

export const MIN_CRIU_VERSION = '4.2';
