// The final delta's small path: the listed paths in one tar archive, sent to a receiver
// started on the destination before the freeze. rsync's protocol costs about 90 ms before
// it has moved a byte of a small change (its start-up, its goodbye round trips, and the
// 20 ms sleeps of its exit); a tar archive into a waiting shell costs the bytes and one
// exit status. Large deltas keep rsync, whose delta algorithm sends only what differs.
// Pure: command lines and the receiver's text.

/**
 * The receiver, run on the destination as: sh -c RECEIVER sh TREE. It reads a line with a
 * count N, N lines each a path (relative to TREE) to remove, a line "." that says the list
 * came whole, then a tar archive to extract in TREE. Nothing is removed unless the list
 * came whole (a cut connection could otherwise shorten a path into another one). The
 * shell's read takes one byte at a time from a pipe, so tar gets the rest untouched; two
 * processes at most (rm, tar): each costs milliseconds in the freeze.
 */
export const RECEIVER = `set -eu
cd "$1"
IFS= read -r n
case $n in ''|*[!0-9]*) echo "runc-migrate: no delta header" >&2; exit 3;; esac
i=0
set --
while [ "$i" -lt "$n" ]; do
  IFS= read -r p || { echo "runc-migrate: the removal list was cut" >&2; exit 4; }
  set -- "$@" "$p"
  i=$((i + 1))
done
IFS= read -r end || end=
[ "$end" = . ] || { echo "runc-migrate: the removal list was cut" >&2; exit 4; }
if [ "$#" -gt 0 ]; then rm -rf -- "$@"; fi
exec tar -x -f - --xattrs --xattrs-include='*' --acls --numeric-owner --same-owner --same-permissions
`;

export const deltaTar = {
  /** The receiver on the destination, for the tree DST. */
  receiver: (dst: string) => ['sh', '-c', RECEIVER, 'sh', dst],

  /**
   * The archive on the source: the NUL-separated members (relative to SRC) read from
   * stdin, no recursion (directories sent whole are listed entry by entry), POSIX format
   * (nanosecond times, xattrs and ACLs in its headers), holes kept, numeric owners.
   */
  create: (src: string) => [
    'tar',
    '-c',
    '-f',
    '-',
    '--format=posix',
    '--xattrs',
    '--xattrs-include=*',
    '--acls',
    '--sparse',
    '--numeric-owner',
    '--no-recursion',
    '-C',
    src,
    '--null',
    '--verbatim-files-from',
    '-T',
    '-',
  ],
};

/** The stream's head: the removal list (paths without a newline: the caller checks). */
export function deltaHead(removals: string[]): Buffer {
  return Buffer.from(`${removals.length}\n${removals.map((p) => p + '\n').join('')}.\n`);
}
