// Moving images: the page server on the destination (reached through the SSH connection
// or directly).
import { keepAlive } from '../prepare/keeper.js';
import { untilQuiet } from '../switchover/protocol.js';
import { hostPort } from '../../firewall.js';
import { criu } from '../../criu.js';
import { MigrateError, EXIT } from '../../errors.js';
import type { Proc } from '../../host.js';
import { commandLine, quote } from '../../shell.js';
import type { WorkPaths } from '../prepare/paths.js';
import type { Session } from '../session.js';
import type { TlsFiles } from './certs.js';

/** Where a page server on the destination listens, and how pages reach it (made once from the plan: runners.ts pageRoute). */
export type PageRoute = { readonly remote: WorkPaths } & (
  | { readonly kind: 'tunnel' }
  | { readonly kind: 'direct'; readonly address: string }
  | { readonly kind: 'tls'; readonly address: string; readonly tls: TlsFiles }
);

export interface PageServer {
  /** host:port for `runc checkpoint --page-server`. */
  endpoint: string;
  /** Resolves with the page server's exit: 0 once a whole dump arrived. */
  done: Promise<number | null>;
  /** Kills the page server (it also stops if the dump never comes). */
  kill: () => Promise<void>;
  /** Kills it and closes the forwarded port. */
  stop: () => Promise<void>;
}

/**
 * Starts `criu page-server` in the foreground of its own exec channel; it listens
 * when it writes a NUL on stdout. It records its pid so it can be killed if the dump
 * never comes. Contract: on failure nothing is left listening.
 */
export async function startPageServer(
  ctx: Session,
  route: PageRoute,
  imagesDir: string,
  prevImagesDir?: string,
): Promise<PageServer> {
  const r = route.remote;
  const tunnelled = route.kind === 'tunnel';
  // tls and direct only where preflight found a direct route (policy.chooseTransport).
  const listen = route.kind === 'tunnel' ? '127.0.0.1' : route.address;
  const argv = criu.pageServer(ctx.opts.remoteCriu, {
    imagesDir,
    workDir: r.criuWork,
    address: listen,
    port: ctx.opts.pageServerPort,
    logFile: r.pageServerLog,
    prevImagesDir,
    tls: route.kind === 'tls' ? route.tls : undefined,
  });
  // The page server cannot outlive the migration: a watcher reads the channel, and when
  // it closes (the tool ended, died, or lost the connection) or goes quiet (a silent
  // partition: protocol.ts KEEPALIVE) the page server is killed. The watcher's output is
  // not the channel's, so the channel ends with the page server.
  const pidFile = quote(r.pageServerPid);
  const proc: Proc = await ctx.dst.spawn([
    'sh',
    '-c',
    `exec 3<&0; ${commandLine(argv)} 3<&- & p=$!; echo $p > ${pidFile}; (${untilQuiet(3)}; kill $p 2>/dev/null) >/dev/null 2>&1 & w=$!; wait $p; s=$?; kill $w 2>/dev/null; exit $s`,
  ]);
  keepAlive(proc);
  const kill = async () => {
    await ctx.dst.run(['sh', '-c', `[ -f ${pidFile} ] && kill $(cat ${pidFile}) 2>/dev/null; rm -f ${pidFile}`], {
      allowFail: true,
    });
  };
  const done = proc.done.then((res) => res.code);
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 20_000);
    proc.stdout.on('data', (d: Buffer) => {
      if (d.includes(0)) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    done.then(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ready) {
    await kill();
    const log = await ctx.dst.run(['tail', '-n', '5', r.pageServerLog], { allowFail: true });
    throw new MigrateError(
      `the page server on the destination did not start: ${log.stdout.trim().split('\n').pop() ?? ''}`,
      EXIT.PREFLIGHT,
      /Address already in use|bind/i.test(log.stdout)
        ? `Port ${ctx.opts.pageServerPort} is taken there: choose another with --page-server-port PORT.`
        : `Read ${r.pageServerLog} on the destination.`,
    );
  }
  let endpoint = hostPort(listen, ctx.opts.pageServerPort);
  let closeForward = async () => {};
  if (tunnelled) {
    const fwd = await ctx.ssh.forwardLocal('127.0.0.1', ctx.opts.pageServerPort);
    endpoint = hostPort('127.0.0.1', fwd.port);
    closeForward = fwd.close;
  }
  return {
    endpoint,
    done,
    kill,
    stop: async () => {
      await closeForward();
      await kill();
    },
  };
}
