// Turns the destination argument into a connectable endpoint: [user@]host[:port] or an
// alias from ~/.ssh/config (HostName, User, Port, IdentityFile, HostKeyAlias, the
// known_hosts files); the command line wins.
import fs from 'node:fs';
import os from 'node:os';
import { DEFAULTS, type Options } from '../options.js';
import type { SshEndpoint } from './connection.js';
import { resolveHostConfig } from './config.js';
import { parseTarget } from './target.js';

export function resolveEndpoint(opts: Options): SshEndpoint {
  const t = parseTarget(opts.destination);
  let text = '';
  try {
    text = fs.readFileSync(opts.sshConfig, 'utf8');
  } catch {
    /* no ssh config: nothing to honour */
  }
  const c = resolveHostConfig(text, t.host);
  const identityFiles = [...opts.identityFiles, ...c.identityFiles];
  return {
    label: opts.destination,
    host: c.hostName ?? t.host,
    port: t.port ?? c.port ?? 22,
    user: t.user ?? c.user ?? os.userInfo().username,
    identityFiles: identityFiles.length ? identityFiles : [...DEFAULTS.identityFiles],
    // --known-hosts is the one user file; else ssh_config's, else OpenSSH's defaults.
    knownHostsFiles: opts.knownHosts ? [opts.knownHosts] : c.userKnownHostsFiles?.length ? c.userKnownHostsFiles : [...DEFAULTS.knownHostsFiles],
    globalKnownHostsFiles: c.globalKnownHostsFiles ?? [...DEFAULTS.globalKnownHostsFiles],
    hostKeyAlias: c.hostKeyAlias,
    acceptNewHostKey: opts.acceptNewHostKey,
    connectTimeoutMs: opts.connectTimeoutMs,
  };
}
