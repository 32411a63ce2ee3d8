// The subset of ssh_config(5) a user expects an SSH tool to honour for a host alias:
// Host blocks with patterns, HostName, User, Port, IdentityFile, HostKeyAlias,
// UserKnownHostsFile, GlobalKnownHostsFile, ProxyJump; Include; Match with simple criteria.
// First value wins, as in OpenSSH; IdentityFile accumulates.
import fs from 'node:fs';
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
  /** IdentitiesOnly yes: only the identity files, not every key of ssh-agent. */
  identitiesOnly?: boolean;
  /** Match criteria met that this tool does not evaluate (those blocks were skipped). */
  unsupportedMatch?: string[];
}

/** What a block needs to apply: every condition of the blocks that include it, and its own. */
type Cond = { host: string[] } | { match: Array<{ negate: boolean; kind: string; values: string[] }> };

interface Block {
  conds: Cond[];
  entries: Array<[string, string]>;
}

/** Include nesting beyond this is refused (as OpenSSH limits it). */
const MAX_INCLUDE_DEPTH = 16;

/**
 * ssh_config text -> blocks. Include inserts the blocks of the files it names (relative
 * paths under ~/.ssh, globs allowed) under the conditions of the block it appears in;
 * the including block goes on after them.
 */
function parseBlocks(text: string, outer: Cond[] = [], depth = 0): Block[] {
  let current: Block = { conds: outer, entries: [] };
  const blocks: Block[] = [current];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^(\S+?)(?:\s*=\s*|\s+)(.*)$/);
    if (!m) continue;
    const key = m[1].toLowerCase();
    const value = m[2].trim();
    if (key === 'host') {
      current = { conds: [...outer, { host: splitArgs(value) }], entries: [] };
      blocks.push(current);
    } else if (key === 'match') {
      current = { conds: [...outer, { match: parseMatch(value) }], entries: [] };
      blocks.push(current);
    } else if (key === 'include') {
      if (depth >= MAX_INCLUDE_DEPTH) continue;
      for (const file of splitArgs(value).flatMap(expandInclude)) {
        let t: string;
        try {
          t = fs.readFileSync(file, 'utf8');
        } catch {
          continue; // as OpenSSH: a file that cannot be read is skipped
        }
        blocks.push(...parseBlocks(t, current.conds, depth + 1));
      }
      current = { conds: current.conds, entries: [] };
      blocks.push(current);
    } else {
      // Quotes stay until the key's kind is known: a list splits on the spaces outside them.
      current.entries.push([key, value]);
    }
  }
  return blocks;
}

/** "host a,b !user x all" -> criteria; each value a comma-separated pattern list. */
function parseMatch(value: string): Array<{ negate: boolean; kind: string; values: string[] }> {
  const words = splitArgs(value);
  const out: Array<{ negate: boolean; kind: string; values: string[] }> = [];
  for (let i = 0; i < words.length; i++) {
    const negate = words[i].startsWith('!');
    const kind = words[i].replace(/^!/, '').toLowerCase();
    if (kind === 'all' || kind === 'canonical' || kind === 'final') out.push({ negate, kind, values: [] });
    else out.push({ negate, kind, values: (words[++i] ?? '').split(',') });
  }
  return out;
}

/** An Include argument -> the files it names, sorted (relative: under ~/.ssh; ~ and globs expanded). */
function expandInclude(arg: string): string[] {
  const home = os.homedir();
  let p = arg.startsWith('~/') ? path.join(home, arg.slice(2)) : arg;
  if (!path.isAbsolute(p)) p = path.join(home, '.ssh', p);
  let found = ['/'];
  for (const part of p.split('/').filter(Boolean)) {
    if (!/[*?[]/.test(part)) {
      found = found.map((d) => path.join(d, part));
      continue;
    }
    found = found.flatMap((d) => {
      try {
        return fs
          .readdirSync(d)
          .filter((n) => !n.startsWith('.') && globMatch(part, n, true))
          .sort()
          .map((n) => path.join(d, n));
      } catch {
        return [];
      }
    });
  }
  return found;
}

function splitArgs(s: string): string[] {
  return (s.match(/"[^"]*"|\S+/g) ?? []).map(unquote);
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}

function globMatch(pattern: string, name: string, caseSensitive = false): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.') +
      '$',
    caseSensitive ? '' : 'i',
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
      case 'd':
        return home;
      case 'h':
        return c.hostName ?? alias;
      case 'n':
        return alias;
      case 'r':
        return c.user ?? os.userInfo().username;
      case 'u':
        return os.userInfo().username;
      case 'p':
        return String(c.port ?? 22);
      case '%':
        return '%';
      default:
        return `%${ch}`;
    }
  });
  if (out.startsWith('~/')) out = path.join(home, out.slice(2));
  return out;
}

/**
 * The settings for ALIAS (the host as typed). user: the remote user from the command
 * line, for Match user. Match criteria honoured: all, host (the HostName set so far, else
 * the alias), originalhost, user, localuser, each negatable; exec, canonical, final and the
 * others never match (listed in unsupported).
 */
export function resolveHostConfig(text: string, alias: string, o: { user?: string } = {}): HostConfig {
  const result: HostConfig = { identityFiles: [] };
  const idFiles: string[] = [];
  const unsupported = new Set<string>();
  const holds = (c: Cond): boolean => {
    if ('host' in c) return hostMatches(c.host, alias);
    return c.match.every((m) => {
      const subject: Record<string, string | undefined> = {
        host: result.hostName?.replace(/%h/g, alias) ?? alias,
        originalhost: alias,
        user: o.user ?? result.user ?? os.userInfo().username,
        localuser: os.userInfo().username,
      };
      let r: boolean;
      if (m.kind === 'all') r = true;
      else if (m.kind in subject) r = hostMatches(m.values, subject[m.kind]!);
      else {
        unsupported.add(m.kind);
        return false;
      }
      return m.negate ? !r : r;
    });
  };
  for (const block of parseBlocks(text)) {
    if (!block.conds.every(holds)) continue;
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
        case 'identitiesonly':
          result.identitiesOnly ??= value.toLowerCase() === 'yes';
          break;
        case 'userknownhostsfile':
          result.userKnownHostsFiles ??= splitArgs(raw);
          break;
        case 'globalknownhostsfile':
          result.globalKnownHostsFiles ??= splitArgs(raw);
          break;
        case 'proxyjump':
          // "none" (first) turns it off, as in OpenSSH.
          result.proxyJump ??=
            value.toLowerCase() === 'none'
              ? []
              : value
                  .split(',')
                  .map((h) => h.trim())
                  .filter(Boolean);
          break;
      }
    }
  }
  if (result.hostName) result.hostName = result.hostName.replace(/%h/g, alias);
  result.identityFiles = idFiles.map((f) => expandPath(f, alias, result));
  // "none" turns a list off, as in OpenSSH.
  const files = (l?: string[]) =>
    l ? l.filter((f) => f.toLowerCase() !== 'none').map((f) => expandPath(f, alias, result)) : undefined;
  result.userKnownHostsFiles = files(result.userKnownHostsFiles);
  result.globalKnownHostsFiles = files(result.globalKnownHostsFiles);
  if (result.proxyJump?.length === 0) result.proxyJump = undefined;
  if (unsupported.size) result.unsupportedMatch = [...unsupported];
  return result;
}
