// The subset of ssh_config(5) a user expects an SSH tool to honour for a host alias:
// Host blocks with patterns, HostName, User, Port, IdentityFile, HostKeyAlias,
// UserKnownHostsFile, GlobalKnownHostsFile, ProxyJump. First value wins, as in OpenSSH;
// IdentityFile accumulates. Match blocks are skipped.
import os from 'node:os';
import path from 'node:path';

export interface HostConfig {
  hostName?: string;
  user?: string;
  port?: number;
  identityFiles: string[];
  hostKeyAlias?: string;
  /** UserKnownHostsFile: the files, in order (undefined: not set). */
  userKnownHostsFiles?: string[];
  globalKnownHostsFiles?: string[];
  /** ProxyJump: the jump hosts as written ([user@]host[:port], comma-separated); undefined for none. */
  proxyJump?: string[];
}

interface Block {
  patterns: string[] | null; // null: before any Host line, or a Match block (skipped)
  match: boolean;
  entries: Array<[string, string]>;
}

function parseBlocks(text: string): Block[] {
  const blocks: Block[] = [{ patterns: [], match: false, entries: [] }];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^(\S+?)(?:\s*=\s*|\s+)(.*)$/);
    if (!m) continue;
    const key = m[1].toLowerCase();
    const value = m[2].trim();
    if (key === 'host') {
      blocks.push({ patterns: splitArgs(value), match: false, entries: [] });
    } else if (key === 'match') {
      blocks.push({ patterns: null, match: true, entries: [] });
    } else {
      // Quotes stay until the key's kind is known: a list splits on the spaces outside them.
      blocks[blocks.length - 1].entries.push([key, value]);
    }
  }
  // Lines before the first Host apply to every host.
  blocks[0].patterns = ['*'];
  return blocks;
}

function splitArgs(s: string): string[] {
  return (s.match(/"[^"]*"|\S+/g) ?? []).map(unquote);
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$',
    'i',
  );
  return re.test(name);
}

/** OpenSSH semantics: any negated pattern that matches excludes the block. */
export function hostMatches(patterns: string[], alias: string): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), alias)) return false;
    } else if (globMatch(p, alias)) {
      matched = true;
    }
  }
  return matched;
}

function expandPath(p: string, alias: string, c: HostConfig): string {
  const home = os.homedir();
  let out = p.replace(/%(.)/g, (_, ch: string) => {
    switch (ch) {
      case 'd': return home;
      case 'h': return c.hostName ?? alias;
      case 'n': return alias;
      case 'r': return c.user ?? os.userInfo().username;
      case 'u': return os.userInfo().username;
      case 'p': return String(c.port ?? 22);
      case '%': return '%';
      default: return `%${ch}`;
    }
  });
  if (out.startsWith('~/')) out = path.join(home, out.slice(2));
  return out;
}

export function resolveHostConfig(text: string, alias: string): HostConfig {
  const result: HostConfig = { identityFiles: [] };
  const idFiles: string[] = [];
  for (const block of parseBlocks(text)) {
    if (block.match || !block.patterns || !hostMatches(block.patterns, alias)) continue;
    for (const [key, raw] of block.entries) {
      const value = unquote(raw);
      switch (key) {
        case 'hostname':
          result.hostName ??= value;
          break;
        case 'user':
          result.user ??= value;
          break;
        case 'port':
          if (result.port === undefined && /^\d+$/.test(value)) result.port = Number(value);
          break;
        case 'identityfile':
          idFiles.push(value);
          break;
        case 'hostkeyalias':
          result.hostKeyAlias ??= value;
          break;
        case 'userknownhostsfile':
          result.userKnownHostsFiles ??= splitArgs(raw);
          break;
        case 'globalknownhostsfile':
          result.globalKnownHostsFiles ??= splitArgs(raw);
          break;
        case 'proxyjump':
          // "none" (first) turns it off, as in OpenSSH.
          result.proxyJump ??= value.toLowerCase() === 'none' ? [] : value.split(',').map((h) => h.trim()).filter(Boolean);
          break;
      }
    }
  }
  if (result.hostName) result.hostName = result.hostName.replace(/%h/g, alias);
  result.identityFiles = idFiles.map((f) => expandPath(f, alias, result));
  // "none" turns a list off, as in OpenSSH.
  const files = (l?: string[]) => (l ? l.filter((f) => f.toLowerCase() !== 'none').map((f) => expandPath(f, alias, result)) : undefined);
  result.userKnownHostsFiles = files(result.userKnownHostsFiles);
  result.globalKnownHostsFiles = files(result.globalKnownHostsFiles);
  if (result.proxyJump?.length === 0) result.proxyJump = undefined;
  return result;
}
