// The TLS transport's key material: made on the source for this one migration, the
// destination's share copied through the SSH connection, and gone with the migration.
//
// Contract: the keys live only in the 0700 tls directories of the two work
// directories. They are removed on every exit path: by the cleanups when the tool ends,
// and, when it dies or loses the connection, by a keeper on each host that holds a pipe
// to the tool (the source) or an exec channel (the destination) and removes the
// directory when that closes.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DEFAULTS } from '../../options.js';
import { caConfig, CERT_BACKDATE_S, CERT_LIFETIME_S, criuTlsConfig, openssl } from '../../openssl.js';
import { commandLine } from '../../shell.js';
import type { Undo } from '../prepare/undo.js';
import type { WorkDirs } from '../prepare/paths.js';
import type { Session } from '../session.js';
import { criuSafePath } from '../switchover/hold.js';
import { localKeeper, remoteKeeper } from '../prepare/keeper.js';
import { streamDir } from './stream.js';

export interface TlsFiles {
  caCert: string;
  cert: string;
  key: string;
}

export interface Certificates {
  /** The source's files: the dumper's (a client), or with post-copy the lazy page server's. */
  source: TlsFiles;
  /** The destination's files: the page server's, or with post-copy the lazy-pages daemon's (a client). */
  destination: TlsFiles;
  /** CRIU's config lines for the source's CRIU (see openssl.criuTlsConfig). */
  criuConfig: string;
  /** Removes both tls directories and ends the keepers. */
  remove: () => Promise<void>;
}

const TLS_DIR = 'tls';

/**
 * Makes a CA, a server and a client certificate for ADDRESS (the page server's, as its
 * client reaches it), installs the destination's on the destination and returns the
 * paths. The page server is on the destination (pre-copy, one shot) or, with post-copy,
 * on the source (SERVER_ON). On failure nothing of it is left on either host.
 */
export async function makeCertificates(
  ctx: Session,
  work: WorkDirs,
  undo: Undo,
  address: string | string[],
  serverOn: 'destination' | 'source' | 'both' = 'destination',
): Promise<Certificates> {
  const localDir = path.join(work.local.base, TLS_DIR);
  const remoteDir = path.join(work.remote.base, TLS_DIR);
  const keepers: Array<() => Promise<void>> = [];
  const remove = async () => {
    for (const k of keepers.splice(0)) await k().catch(() => undefined);
    await fs.rm(localDir, { recursive: true, force: true });
    await ctx.dst.run(['rm', '-rf', remoteDir], { allowFail: true });
  };
  try {
    await fs.mkdir(localDir, { mode: 0o700 });
    keepers.push(await localKeeper('tls-keeper', ['rm', '-rf', localDir]));
    const make = path.join(localDir, 'make');
    const peer = path.join(make, 'peer');
    await fs.mkdir(peer, { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(make, 'index.txt'), '');
    await fs.writeFile(
      path.join(make, 'serial'),
      crypto
        .randomBytes(8)
        .toString('hex')
        .toUpperCase()
        .replace(/^[89A-F]/, '1') + '\n',
    );
    const config = path.join(make, 'ca.cnf');
    await fs.writeFile(config, caConfig(make, address, serverOn === 'both'), { mode: 0o600 });
    const id = crypto.randomBytes(6).toString('hex');
    const now = Date.now();
    const start = new Date(now - CERT_BACKDATE_S * 1000);
    const end = new Date(now + CERT_LIFETIME_S * 1000);
    const run = async (argv: string[]) => {
      const r = await ctx.src.run(argv, { allowFail: true, timeoutMs: 30_000 });
      if (r.code !== 0)
        throw new Error(
          `${commandLine(argv.slice(0, 2))} failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`,
        );
    };
    const caKey = path.join(make, 'ca.key');
    const caCert = path.join(localDir, 'ca.crt');
    await run(openssl.request(caKey, path.join(make, 'ca.csr'), `runc-migrate CA ${id}`));
    await run(
      openssl.sign({
        config,
        csr: path.join(make, 'ca.csr'),
        out: caCert,
        ext: 'ca_cert',
        start,
        end,
        selfSign: true,
        caKey,
      }),
    );
    const [srcExt, dstExt] = serverOn === 'source' ? ['server_cert', 'client_cert'] : ['client_cert', 'server_cert'];
    const source: TlsFiles = {
      caCert,
      cert: path.join(localDir, 'source.crt'),
      key: path.join(localDir, 'source.key'),
    };
    await run(openssl.request(source.key, path.join(make, 'source.csr'), `runc-migrate source ${id}`));
    await run(
      openssl.sign({
        config,
        csr: path.join(make, 'source.csr'),
        out: source.cert,
        ext: srcExt,
        start,
        end,
        caCert,
        caKey,
      }),
    );
    await run(
      openssl.request(
        path.join(peer, 'destination.key'),
        path.join(make, 'destination.csr'),
        `runc-migrate destination ${id}`,
      ),
    );
    await run(
      openssl.sign({
        config,
        csr: path.join(make, 'destination.csr'),
        out: path.join(peer, 'destination.crt'),
        ext: dstExt,
        start,
        end,
        caCert,
        caKey,
      }),
    );
    await fs.copyFile(caCert, path.join(peer, 'ca.crt'));
    // The CA's key goes at once: no other certificate can ever be made for this migration.
    await fs.rm(caKey, { force: true });
    await ctx.dst.run(['mkdir', '-m', '0700', remoteDir]);
    keepers.push(await remoteKeeper(ctx.dst, 'tls-keeper', ['rm', '-rf', remoteDir]));
    await streamDir(ctx, peer, remoteDir, [], 60_000);
    await fs.rm(make, { recursive: true, force: true });
    const destination: TlsFiles = {
      caCert: path.join(remoteDir, 'ca.crt'),
      cert: path.join(remoteDir, 'destination.crt'),
      key: path.join(remoteDir, 'destination.key'),
    };
    const named = await criuNames(undo, localDir, source);
    return { source, destination, criuConfig: criuTlsConfig(named), remove };
  } catch (err) {
    await remove();
    throw err;
  }
}

/**
 * The names CRIU's config file gives the source's files: their own paths when its
 * parser takes them whole, else a link to the directory under /run (removed by the
 * cleanups; the directory it points to goes anyway).
 */
async function criuNames(undo: Undo, dir: string, f: TlsFiles): Promise<TlsFiles> {
  if (criuSafePath(dir)) return f;
  const linkDir = path.join(DEFAULTS.intentDir, 'hold');
  await fs.mkdir(linkDir, { recursive: true, mode: 0o700 });
  const link = path.join(linkDir, `tls-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  await fs.symlink(dir, link);
  undo.add(`remove ${link}`, async () => {
    await fs.rm(link, { force: true });
    await fs.rmdir(linkDir).catch(() => undefined); // when no other run's link is there
  });
  const via = (p: string) => path.join(link, path.basename(p));
  return { caCert: via(f.caCert), cert: via(f.cert), key: via(f.key) };
}
