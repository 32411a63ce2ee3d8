// Turns the destination argument into a connectable endpoint: [user@]host[:port] or an
// alias from ~/.ssh/config (HostName, User, Port, IdentityFile, HostKeyAlias, the
// known_hosts files, ProxyJump); the command line wins.
import fs from 'node:fs';
import os from 'node:os';
import { UsageError } from '../errors.js';
import { DEFAULTS, type Options } from '../options.js';
import type { SshEndpoint } from './connection.js';
import { resolveHostConfig } from './config.js';
import { parseTarget } from './target.js';

/** Jump chains deeper than this are refused (a ProxyJump loop in the config). */
const MAX_JUMP_DEPTH = 8;

export function resolveEndpoint(opts: Options): SshEndpoint {
  let text = '';
  try {
    text = fs.readFileSync(opts.sshConfig, 'utf8');
  } catch {
    /* no ssh config: nothing to honour */
  }
  return resolveHop(opts.destination, text, opts, 0);
}

/** One host, as ssh would reach it with this config: its own settings and jump hosts. */
function resolveHop(spec: string, text: string, opts: Options, depth: number): SshEndpoint {
  if (depth > MAX_JUMP_DEPTH) {
    throw new UsageError(
      `ProxyJump in ${opts.sshConfig} goes more than ${MAX_JUMP_DEPTH} hosts deep (a loop?) at ${spec}`,
      'Check the ProxyJump lines of your ssh config.',
    );
  }
  const t = parseTarget(spec);
  const c = resolveHostConfig(text, t.host, { user: t.user });
  const identityFiles = [...opts.identityFiles, ...c.identityFiles];
  return {
    label: spec,
    host: c.hostName ?? t.host,
    port: t.port ?? c.port ?? 22,
    user: t.user ?? c.user ?? os.userInfo().username,
    identityFiles: identityFiles.length ? identityFiles : [...DEFAULTS.identityFiles],
    // --known-hosts is the one user file; else ssh_config's, else OpenSSH's defaults.
    knownHostsFiles: opts.knownHosts
      ? [opts.knownHosts]
      : c.userKnownHostsFiles?.length
        ? c.userKnownHostsFiles
        : [...DEFAULTS.knownHostsFiles],
    globalKnownHostsFiles: c.globalKnownHostsFiles ?? [...DEFAULTS.globalKnownHostsFiles],
    hostKeyAlias: c.hostKeyAlias,
    identitiesOnly: c.identitiesOnly,
    acceptNewHostKey: opts.acceptNewHostKey,
    connectTimeoutMs: opts.connectTimeoutMs,
    jumps: c.proxyJump?.map((j) => resolveHop(j, text, opts, depth + 1)),
    warnings: c.unsupportedMatch?.map(
      (k) => `${opts.sshConfig}: Match ${k} is not evaluated by this tool; its blocks were skipped for ${spec}`,
    ),
  };
}
