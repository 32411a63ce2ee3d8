// What every stage of one migration shares: the options, the two hosts, runc on each,
// the connection to the destination, and the test faults (none in production). Built
// once the destination is connected; nothing in it is filled in later.
import { type Host, LocalHost, type RemoteHost } from '../host.js';
import { DEFAULTS, type Options } from '../options.js';
import type { Progress } from '../progress.js';
import type { RuncGlobal } from '../runc.js';
import type { SshConnection } from '../ssh/connection.js';
import { type Faults, NO_FAULTS } from './faults.js';
import { intentPath } from './recover/intent.js';

/** What the source's checks need: nothing of the destination. */
export interface LocalSession {
  readonly opts: Options;
  readonly progress: Progress;
  /** Shows a command as it runs (--verbose). */
  readonly log: (host: string, line: string) => void;
  readonly src: Host;
  readonly srcRunc: RuncGlobal;
  readonly dstRunc: RuncGlobal;
  /** The intent record of this migration (recover/intent.ts). */
  readonly intentFile: string;
  readonly faults: Faults;
}

export interface Session extends LocalSession {
  readonly dst: RemoteHost;
  /** The connection to the destination; replaced by reconnect() when it drops. */
  ssh: SshConnection;
}

/** The two hosts, for what only runs commands on them. */
export type Hosts = Pick<Session, 'src' | 'dst'>;

/** runc on each side as the options name it (criu from PATH unless one was given). */
export function runcOf(opts: Options): { srcRunc: RuncGlobal; dstRunc: RuncGlobal } {
  return {
    srcRunc: { runc: opts.runc, root: opts.runcRoot, criu: opts.criu === 'criu' ? undefined : opts.criu },
    dstRunc: {
      runc: opts.remoteRunc,
      root: opts.remoteRuncRoot,
      criu: opts.remoteCriu === 'criu' ? undefined : opts.remoteCriu,
    },
  };
}

/** What a run on this host shares before any connection: its options, this host, runc on each side, the record's path. */
export function localSession(opts: Options, progress: Progress, faults: Faults = NO_FAULTS): LocalSession {
  const log = (host: string, line: string) => progress.command(host, line);
  return {
    opts,
    progress,
    log,
    src: new LocalHost(log),
    ...runcOf(opts),
    intentFile: intentPath(DEFAULTS.intentDir, opts.container),
    faults,
  };
}
