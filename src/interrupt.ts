// SIGINT, SIGTERM and SIGHUP as the tool sees them: set by the CLI's handler, read between
// phases before the freeze; a long step before the freeze registers a way to stop itself.
//
// A signal sent to the tool's process group while it forks a command can stay pending in
// the child until the child unblocks signals just before exec (after it left the group):
// the command then dies of it at birth, before it did anything. diedAtBirth() tells such
// a death apart, so that the command can be run again: every command is started in its
// own process group, so nothing else of the tool's sends it these signals.
export const interruption = {
  requested: false as boolean,
  signal: '' as string,
  stoppers: new Set<() => void>(),
  request(signal: string): void {
    this.requested = true;
    this.signal = signal;
    for (const stop of this.stoppers) stop();
  },
};

const GROUP_SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP']);

/** A command killed by the signal the tool itself received: it never ran; run it again. */
export function diedAtBirth(signal: string | undefined | null): boolean {
  return interruption.requested && !!signal && GROUP_SIGNALS.has(signal);
}
