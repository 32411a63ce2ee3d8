// The standby's store of restorable checkpoints (issue 25's replicate/failover). A
// checkpoint is written into a partial directory and becomes one only when the publish
// step has flushed it, written its `complete` record, renamed it into place and swapped
// the `latest` link, each step flushed before the next; failover restores only what
// `latest` names and whose record is there. A checkpoint torn by the tool's death or a
// reboot stays a partial directory, never restored, and is removed by the next publish.
//
// Layout, in the replica's directory on the standby:
//   checkpoints/<seq>/             complete: images/, bundle/ (config.json, rootfs/), `complete` (JSON)
//   checkpoints/.<seq>.partial/    being written
//   chains/<chain>/<n>/            pre-dumps a checkpoint's images are parented on
//   latest -> checkpoints/<seq>
export const COMPLETE = 'complete';

/** What the `complete` record says of a checkpoint. */
export interface CheckpointRecord {
  readonly seq: number;
  /** The source's clock when the container was frozen for it (ms since the epoch): its age is the RPO. */
  readonly frozenAt: number;
  /** The pre-dump chain its images are parented on, if any. */
  readonly chain?: string;
  readonly bytes: number;
  readonly freezeMs: number;
  /** Where it was taken: the source's host name and its runc root. */
  readonly source?: string;
  /** Established TCP connections are in its images (restored closed by failover). */
  readonly tcpEstablished?: boolean;
}

/** The store as a listing shows it (listStoreScript's output). */
export interface StoreListing {
  readonly complete: CheckpointRecord[];
  readonly partial: number[];
  readonly chains: string[];
  /** The seq `latest` names, if it names a complete checkpoint. */
  readonly latest?: number;
}

/**
 * The publish step for checkpoint SEQ (POSIX sh; $1 the replica's directory, $2 the seq,
 * $3 the `complete` record's JSON, $4 how many complete checkpoints to keep). Prints
 * `published SEQ`, then `removed PATH` for what it pruned.
 */
export const PUBLISH_SCRIPT = `set -eu
cd "$1"
seq=$2
# Under the lease's lock, and never once failed over: the restored container runs from
# a checkpoint here, which a publish's pruning must not remove.
exec 9>>lease.lock
flock -w 30 9 || { echo "runc-migrate: the lease lock stayed taken for 30 s" >&2; exit 4; }
if grep -q '"failedOver"' lease 2>/dev/null; then echo "runc-migrate: failed over: checkpoint $seq not published" >&2; exit 5; fi
part=checkpoints/.$seq.partial
[ -d "$part" ] || { echo "runc-migrate: no checkpoint $seq being written" >&2; exit 3; }
sync -f "$part"
printf '%s\\n' "$3" > "$part/${COMPLETE}.new"
sync "$part/${COMPLETE}.new"
mv -f "$part/${COMPLETE}.new" "$part/${COMPLETE}"
mv -T "$part" "checkpoints/$seq"
sync checkpoints
ln -sfn "checkpoints/$seq" latest.new
mv -T latest.new latest
sync .
echo "published $seq"
keep=$4
n=0
find checkpoints -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf '%f\\n' | sort -rn | while IFS= read -r d; do
  n=$((n + 1))
  if [ "$n" -gt "$keep" ]; then rm -rf "checkpoints/$d"; echo "removed checkpoints/$d"; fi
done
for d in checkpoints/.*.partial; do
  [ -d "$d" ] || continue
  rm -rf "$d"; echo "removed $d"
done
`;

/** Lists the store (POSIX sh; $1 the replica's directory): each complete record, each partial, each chain, latest. */
export const LIST_SCRIPT = `set -eu
cd "$1"
for d in checkpoints/.*.partial; do
  [ -d "$d" ] && echo "partial \${d#checkpoints/}"
done
for d in checkpoints/*; do
  [ -s "$d/${COMPLETE}" ] && printf 'complete %s\\n' "$(cat "$d/${COMPLETE}")"
done
for c in chains/*; do
  [ -d "$c" ] && echo "chain \${c#chains/}"
done
[ -L latest ] && echo "latest $(readlink latest)"
true
`;

export function parseListing(text: string): StoreListing {
  const complete: CheckpointRecord[] = [];
  const partial: number[] = [];
  const chains: string[] = [];
  let latestLink: string | undefined;
  for (const line of text.split('\n')) {
    const [kind, ...rest] = line.split(' ');
    const value = rest.join(' ');
    if (kind === 'complete') {
      try {
        const r = JSON.parse(value) as CheckpointRecord;
        if (Number.isInteger(r.seq)) complete.push(r);
      } catch {
        // A record cut short is not a record: that checkpoint is not complete.
      }
    } else if (kind === 'partial') {
      const m = value.match(/^\.(\d+)\.partial$/);
      if (m) partial.push(Number(m[1]));
    } else if (kind === 'chain' && value) {
      chains.push(value);
    } else if (kind === 'latest') {
      latestLink = value;
    }
  }
  complete.sort((a, b) => a.seq - b.seq);
  const named = latestLink?.match(/^checkpoints\/(\d+)$/);
  const latest = named && complete.some((c) => c.seq === Number(named[1])) ? Number(named[1]) : undefined;
  return { complete, partial, chains, latest };
}

/** The checkpoint failover restores: the one `latest` names, complete; never a partial one. */
export function restorable(s: StoreListing): CheckpointRecord | undefined {
  return s.latest === undefined ? undefined : s.complete.find((c) => c.seq === s.latest);
}

/** The next checkpoint's number: after every one there is, complete or torn. */
export function nextSeq(s: StoreListing): number {
  return Math.max(0, ...s.complete.map((c) => c.seq), ...s.partial) + 1;
}

/**
 * Removes the pre-dump chains no checkpoint here is parented on (POSIX sh; $1 the
 * replica's directory, $2 the chain being built, kept). What is in use is read from the
 * checkpoints' own `parent` links, complete or not: a checkpoint whose record cannot be
 * read still keeps its chain. Prints `removed chains/ID` for each.
 */
export const PRUNE_CHAINS_SCRIPT = `set -eu
cd "$1"
current=$2
used=$(for l in checkpoints/*/images/parent checkpoints/.*.partial/images/parent; do
  if [ -L "$l" ]; then readlink "$l"; fi
done | sed -n 's#^.*chains/\\([^/]*\\)/.*$#\\1#p' | sort -u)
for c in chains/*; do
  [ -d "$c" ] || continue
  id=\${c#chains/}
  [ "$id" = "$current" ] && continue
  if printf '%s\\n' "$used" | grep -qxF -- "$id"; then continue; fi
  rm -rf "$c"
  echo "removed $c"
done
`;

/** A pre-dump a dump can be parented on: its chain, its number, its directory (relative to the replica's, and to replicate's work directory: the layouts are alike). */
export interface PreDumpRef {
  readonly chain: string;
  readonly n: number;
  /** chains/<chain>/<n> */
  readonly dir: string;
}

export function preDumpRef(chain: string, n: number): PreDumpRef {
  return { chain, n, dir: `chains/${chain}/${n}` };
}
