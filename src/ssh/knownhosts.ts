// known_hosts(5) lookup, as OpenSSH's StrictHostKeyChecking=yes does it, over every file
// OpenSSH reads (the user's files, then the global ones): plain and hashed (|1|salt|hash)
// host names (matched in lower case, as OpenSSH looks them up), [host]:port, comma lists,
// negation, wildcards, @revoked. A host covered by an @cert-authority line is vouched for
// by host certificates, which ssh2 cannot verify: it is refused as such, never treated as
// unknown (an "accept new key" would otherwise accept an attacker's plain key for it).
import crypto from 'node:crypto';
import { hostMatches } from './config.js';

/** One known_hosts file and its text ('' when it does not exist). */
export interface KnownHostsSource {
  file: string;
  text: string;
}

export interface KnownKey {
  keyType: string;
  keyBase64: string;
  file: string;
  line: number;
}

export type HostKeyVerdict =
  | { status: 'match' }
  /** No entry of any kind for this host name, in any file. */
  | { status: 'unknown' }
  | { status: 'changed'; expected: KnownKey[] }
  | { status: 'revoked'; file: string; line: number }
  /** Only a certificate authority vouches for this host: its plain key cannot be checked here. */
  | { status: 'ca-covered'; file: string; line: number };

interface Entry {
  marker?: string;
  hosts: string;
  keyType: string;
  keyBase64: string;
  file: string;
  line: number;
}

function parse(sources: KnownHostsSource[]): Entry[] {
  const entries: Entry[] = [];
  for (const { file, text } of sources) {
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const fields = line.split(/\s+/);
      let marker: string | undefined;
      if (fields[0].startsWith('@')) marker = fields.shift();
      if (fields.length < 3) return;
      entries.push({ marker, hosts: fields[0], keyType: fields[1], keyBase64: fields[2], file, line: i + 1 });
    });
  }
  return entries;
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split('|'); // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const hmac = crypto.createHmac('sha1', Buffer.from(parts[2], 'base64')).update(name).digest('base64');
  return hmac === parts[3];
}

function entryMatches(hosts: string, name: string): boolean {
  const n = name.toLowerCase();
  if (hosts.startsWith('|')) return hashedMatches(hosts, n);
  return hostMatches(hosts.split(','), n);
}

/** The key type named inside an SSH public key blob (a length-prefixed string). */
export function keyTypeOfBlob(blob: Buffer): string {
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('ascii');
}

export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + crypto.createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/**
 * Host key algorithms for the key types known for this host, so the key exchange asks for
 * the key that can be checked (as OpenSSH does). An RSA key is asked for with SHA-2
 * signatures first: OpenSSH 8.8 and later refuse ssh-rsa (SHA-1) by default.
 */
export function knownKeyTypes(sources: KnownHostsSource[], name: string): string[] {
  const types = parse(sources)
    .filter((e) => !e.marker && entryMatches(e.hosts, name))
    .flatMap((e) => (e.keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [e.keyType]));
  return [...new Set(types)];
}

export function verifyHostKey(sources: KnownHostsSource[], name: string, blob: Buffer): HostKeyVerdict {
  const b64 = blob.toString('base64');
  const all = parse(sources);
  const revoked = all.find((e) => e.marker === '@revoked' && e.keyBase64 === b64);
  if (revoked) return { status: 'revoked', file: revoked.file, line: revoked.line };
  const entries = all.filter((e) => entryMatches(e.hosts, name));
  const plain = entries.filter((e) => !e.marker);
  if (plain.some((e) => e.keyBase64 === b64)) return { status: 'match' };
  const type = keyTypeOfBlob(blob);
  const sameType = plain.filter((e) => e.keyType === type);
  const known = (es: Entry[]) =>
    es.map((e) => ({ keyType: e.keyType, keyBase64: e.keyBase64, file: e.file, line: e.line }));
  if (sameType.length > 0) return { status: 'changed', expected: known(sameType) };
  // Known under another key type only: OpenSSH also refuses this as a possible attack.
  if (plain.length > 0) return { status: 'changed', expected: known(plain) };
  const ca = entries.find((e) => e.marker === '@cert-authority');
  if (ca) return { status: 'ca-covered', file: ca.file, line: ca.line };
  return { status: 'unknown' };
}

export function knownHostsLine(name: string, blob: Buffer): string {
  return `${name.toLowerCase()} ${keyTypeOfBlob(blob)} ${blob.toString('base64')}`;
}
