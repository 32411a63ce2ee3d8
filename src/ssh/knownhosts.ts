// known_hosts(5) lookup, as OpenSSH's StrictHostKeyChecking=yes does it: plain and
// hashed (|1|salt|hash) host names, [host]:port, comma lists, negation, wildcards,
// @revoked. @cert-authority lines are ignored (certificates are not supported).
import crypto from 'node:crypto';
import { hostMatches } from './config.js';

export interface KnownKey {
  keyType: string;
  keyBase64: string;
  line: number;
}

export type HostKeyVerdict =
  | { status: 'match' }
  | { status: 'unknown' }
  | { status: 'changed'; expected: KnownKey[] }
  | { status: 'revoked' };

interface Entry {
  marker?: string;
  hosts: string;
  keyType: string;
  keyBase64: string;
  line: number;
}

function parse(text: string): Entry[] {
  const entries: Entry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0].startsWith('@')) marker = fields.shift();
    if (fields.length < 3) return;
    entries.push({ marker, hosts: fields[0], keyType: fields[1], keyBase64: fields[2], line: i + 1 });
  });
  return entries;
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split('|'); // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const hmac = crypto.createHmac('sha1', Buffer.from(parts[2], 'base64')).update(name).digest('base64');
  return hmac === parts[3];
}

function entryMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith('|')) return hashedMatches(hosts, name);
  return hostMatches(hosts.split(','), name);
}

/** The key type named inside an SSH public key blob (a length-prefixed string). */
export function keyTypeOfBlob(blob: Buffer): string {
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('ascii');
}

export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + crypto.createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** Key types known for this host, so the key exchange can prefer them (as OpenSSH does). */
export function knownKeyTypes(text: string, name: string): string[] {
  return [...new Set(parse(text).filter((e) => !e.marker && entryMatches(e.hosts, name)).map((e) => e.keyType))];
}

export function verifyHostKey(text: string, name: string, blob: Buffer): HostKeyVerdict {
  const b64 = blob.toString('base64');
  const entries = parse(text).filter((e) => entryMatches(e.hosts, name) || e.marker === '@revoked');
  if (entries.some((e) => e.marker === '@revoked' && e.keyBase64 === b64)) return { status: 'revoked' };
  const plain = entries.filter((e) => !e.marker);
  if (plain.some((e) => e.keyBase64 === b64)) return { status: 'match' };
  const type = keyTypeOfBlob(blob);
  const sameType = plain.filter((e) => e.keyType === type);
  if (sameType.length > 0) {
    return { status: 'changed', expected: sameType.map((e) => ({ keyType: e.keyType, keyBase64: e.keyBase64, line: e.line })) };
  }
  // Known under another key type only: OpenSSH also refuses this as a possible attack.
  if (plain.length > 0) {
    return { status: 'changed', expected: plain.map((e) => ({ keyType: e.keyType, keyBase64: e.keyBase64, line: e.line })) };
  }
  return { status: 'unknown' };
}

export function knownHostsLine(name: string, blob: Buffer): string {
  return `${name} ${keyTypeOfBlob(blob)} ${blob.toString('base64')}`;
}
