// The destination as the user wrote it: [user@]host[:port], IPv6 in brackets.
import { isIP } from 'node:net';
import { UsageError } from '../errors.js';

export interface Target {
  user?: string;
  host: string;
  port?: number;
}

/** ssh's URL form, ssh://[user@]host[:port][/], as the [user@]host[:port] it names (anything else as given, trimmed). */
export function withoutSshUrl(spec: string): string {
  return spec.trim().replace(/^ssh:\/\/([^/]*)\/?$/, '$1');
}

export function parseTarget(spec: string): Target {
  const s = withoutSshUrl(spec);
  if (!s) throw new UsageError('the destination host is empty', 'Give it as [user@]host[:port].');
  let user: string | undefined;
  let rest = s;
  const at = s.lastIndexOf('@');
  if (at >= 0) {
    user = s.slice(0, at);
    rest = s.slice(at + 1);
    if (!user) throw new UsageError(`"${spec}": empty user name before "@"`, 'Give it as [user@]host[:port].');
  }
  let host = rest;
  let portText: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw new UsageError(`"${spec}": unclosed "["`, 'Write IPv6 addresses as [addr]:port.');
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after) {
      if (!after.startsWith(':')) throw new UsageError(`"${spec}": unexpected "${after}" after "]"`);
      portText = after.slice(1);
    }
  } else if ((rest.match(/:/g) ?? []).length === 1) {
    [host, portText] = rest.split(':');
  }
  if (!host) throw new UsageError(`"${spec}": no host name`, 'Give it as [user@]host[:port].');
  // Colons outside brackets: an IPv6 address, or a mistake (host:port:port, a URL).
  if (host.includes(':') && !rest.startsWith('[') && isIP(host.replace(/%[^%]*$/, '')) !== 6)
    throw new UsageError(
      `"${spec}": "${host}" is neither host:port nor an IPv6 address`,
      'Give it as [user@]host[:port], an IPv6 address as [addr]:port, or as ssh://[user@]host[:port].',
    );
  if (/[\s/]/.test(host)) throw new UsageError(`"${spec}": "${host}" is not a host name`);
  let port: number | undefined;
  if (portText !== undefined) {
    port = parsePort(portText, `port in "${spec}"`);
  }
  return { user, host, port };
}

export function parsePort(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: "${text}" is not a number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new UsageError(`${what}: ${n} is not between 1 and 65535`);
  return n;
}

/** How known_hosts names a host: plain for port 22, [host]:port otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}
