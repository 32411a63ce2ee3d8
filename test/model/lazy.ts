// An exhaustive model checker of post-copy's lazy window (src/migration/switchover/postcopy.ts): the
// destination's lazy-pages daemon and its guard, the source's CRIU (its lazy page server)
// and its watchdog, the link between them, the tool, and `migrate recover`. Every
// interleaving of their steps and of the faults is explored breadth-first over a visited
// set; every state is checked against the safety invariants, and every settled state
// (nothing left to do, the link back, the operator's last recover run) against the end.
//
// Pure: no I/O, no timers. What it assumes (and so what it can miss):
// - The daemon's session with CRIU, as CRIU 4.2 runs it (criu/uffd.c, criu/page-xfer.c):
//   pages flow while the link is up; once the daemon holds every page it sends CLOSE and
//   waits for CRIU's status; CRIU answers and waits for the daemon to close; the daemon
//   closes and exits 0. CRIU destroys the source when the close arrives; any other end of
//   its session (a reset, a cut) resumes the source behind CRIU's network lock. A daemon
//   whose session breaks exits 0 if it already had every page (CRIU ignores the failed
//   CLOSE), non-zero otherwise.
// - A reset breaks both ends at once; a silent partition delivers nothing until it heals.
//   One episode of each at most.
// - Time is abstracted away except for the order the design relies on: the guard kills a
//   daemon that is blocked (stalled) on a silent link, and the source's watchdog cuts CRIU
//   only once the guard's daemon has ended (its limits are later). The guard's window
//   limit is the same kind of event: it may fire while the daemon has not ended.
// - The tool may die at any step. Alive, it waits for the guard's decision and CRIU's end,
//   then acts; if it cannot reach the guard it reports in doubt and ends. Once it is gone,
//   recover (the watchdog's, or the operator's) may run at any time CRIU has ended; it acts
//   only when it can read the guard's files (the link up).
// - The copy does not die by itself in the window (README: the source is then destroyed
//   too, as if it had died after the migration), and a daemon does not fail by itself
//   unless `daemonFails` is set: that is the one path CRIU's protocol leaves to a loss.
//
// Invariants:
// 1. a kept (committed) copy had every page;
// 2. never a kept copy and a visible source (resumed and unlocked) at once;
// 3. settled: exactly one visible copy (the kept copy, or the unlocked source), no source
//    left behind CRIU's lock, CRIU ended; or, only with daemonFails, the container lost.

type Daemon = 'fetching' | 'all' | 'status' | 'exit0' | 'exitN';
type Criu = 'serving' | 'answered' | 'ended0' | 'endedN';
type Source = 'frozen' | 'destroyed' | 'locked' | 'visible' | 'removed';
type Guard = 'window' | 'kept' | 'removed';
type Link = 'up' | 'silent' | 'healed';
/** The daemon's end of its TCP session: open, closed cleanly (a FIN on its way), reset (an RST on its way), or broken by a reset of the link. */
type Sock = 'open' | 'fin' | 'rst' | 'broken';

export interface LazyState {
  daemon: Daemon;
  sock: Sock;
  /** The daemon sent CLOSE (it had every page, or it failed by itself). */
  closeSent: boolean;
  criu: Criu;
  source: Source;
  guard: Guard;
  link: Link;
  /** A reset has happened (at most one). */
  reset: boolean;
  tool: 'alive' | 'dead' | 'done';
  /** The daemon held every page at some point (what "complete" means). */
  hadAll: boolean;
  /** Set when the daemon failed by itself (daemonFails). */
  failed: boolean;
  /** The guard killed the daemon (its log then never says "Disconnect from the page server"). */
  killed: boolean;
}

export interface LazyConfig {
  /** The daemon may fail by itself with the link up (it still says CLOSE: CRIU's flaw). */
  daemonFails: boolean;
  /**
   * The rule under test: the guard keeps the copy iff its daemon exited 0 (true); false: the
   * old rule, which also kept it when the daemon's log said it disconnected (it does after
   * any end it reaches by itself, a broken session included) without "doesn't answer".
   */
  exitCodeRule: boolean;
  /** The guard resets the daemon's session (ss -K) before it kills the daemon (true); false: a killed daemon's socket closes cleanly. */
  killResets: boolean;
}

export interface LazyResult {
  states: number;
  violations: Array<{ invariant: string; trace: string[] }>;
}

const key = (s: LazyState) => JSON.stringify(s);

/** Each step: what happens, the next state, and whether it is a fault (the environment may do it; a settled state may still allow it). */
function steps(s: LazyState, c: LazyConfig): Array<[string, LazyState, boolean]> {
  const out: Array<[string, LazyState, boolean]> = [];
  const go = (what: string, d: Partial<LazyState>, fault = false) => out.push([what, { ...s, ...d }, fault]);
  const up = s.link !== 'silent';
  const criuWaits = s.criu === 'serving' || s.criu === 'answered';
  // The session, as far as the link delivers it.
  if (up && s.daemon === 'fetching' && s.sock === 'open')
    go('the last page arrives; the daemon sends CLOSE', { daemon: 'all', hadAll: true, closeSent: true });
  if (up && s.sock === 'rst' && criuWaits)
    go('CRIU gets the reset: the source resumes behind its lock', { criu: 'endedN', source: 'locked' });
  if (up && s.sock !== 'rst' && s.sock !== 'broken' && s.closeSent && s.criu === 'serving')
    go('CRIU hears CLOSE and answers', { criu: 'answered' });
  if (up && s.sock === 'open' && s.daemon === 'all' && s.criu === 'answered')
    go('the daemon gets the status', { daemon: 'status' });
  if (s.daemon === 'status' && s.sock === 'open')
    go('the daemon closes its session and exits 0', { daemon: 'exit0', sock: 'fin' });
  if (up && s.sock === 'fin' && s.criu === 'answered')
    go('CRIU sees the clean close: the source is destroyed', { criu: 'ended0', source: 'destroyed' });
  if (up && s.sock === 'fin' && s.criu === 'serving' && !s.closeSent)
    go('CRIU sees the session end early: the source resumes behind its lock', { criu: 'endedN', source: 'locked' });
  if (c.daemonFails && up && s.daemon === 'fetching' && s.sock === 'open')
    go('the daemon fails by itself, says CLOSE and exits', {
      daemon: 'exitN',
      failed: true,
      closeSent: true,
      sock: 'fin',
    });
  // Faults on the link.
  if (!s.reset && s.link !== 'silent') {
    const daemon: Daemon =
      s.daemon === 'fetching' ? 'exitN' : s.daemon === 'all' || s.daemon === 'status' ? 'exit0' : s.daemon;
    go(
      'the link is reset',
      {
        reset: true,
        daemon,
        sock: s.sock === 'open' ? 'broken' : s.sock,
        criu: criuWaits ? 'endedN' : s.criu,
        source: criuWaits ? 'locked' : s.source,
      },
      true,
    );
  }
  if (s.link === 'up') go('the link goes silent', { link: 'silent' }, true);
  if (s.link === 'silent') go('the link comes back', { link: 'healed' });
  // The guard kills its daemon: stalled on a silent link, at the window's limit, or on the tool's word.
  const killed: Partial<LazyState> = {
    daemon: 'exitN',
    killed: true,
    sock: s.sock === 'open' ? (c.killResets ? 'rst' : 'fin') : s.sock,
  };
  if (s.daemon === 'fetching' || s.daemon === 'all') {
    if (s.link === 'silent') go("the guard's stall limit kills the daemon", killed);
    go("the guard's window limit kills the daemon", killed, true);
    if (up && s.tool === 'alive') go('the tool cuts the window', killed, true);
  }
  if (s.guard === 'window' && (s.daemon === 'exit0' || s.daemon === 'exitN')) {
    const keep = s.daemon === 'exit0' || (!c.exitCodeRule && !s.killed);
    go(`the guard decides from its daemon (${s.daemon})`, { guard: keep ? 'kept' : 'removed' });
  }
  // The source's watchdog: its limits come after the guard's daemon ended; it resets CRIU's session.
  if (criuWaits && (s.daemon === 'exit0' || s.daemon === 'exitN'))
    go("the source's watchdog cuts CRIU", { criu: 'endedN', source: 'locked' }, !(s.link === 'silent'));
  // The tool: alive, it acts once the guard decided and CRIU ended; unreachable, it reports in doubt.
  const criuEnded = !criuWaits;
  if (s.tool === 'alive') {
    go('the tool dies', { tool: 'dead' }, true);
    if (criuEnded && s.guard !== 'window' && up) go('the tool follows the guard', { ...follow(s), tool: 'done' });
    if (criuEnded && !up) go('the tool cannot reach the guard: in doubt', { tool: 'done' });
  }
  // recover, once the tool is gone: only when it can read the guard's files.
  if (s.tool !== 'alive' && criuEnded && s.guard !== 'window' && up && s.source === 'locked')
    go('recover follows the guard', follow(s));
  return out.filter(([, n]) => key(n) !== key(s));
}

/** What the tool and recover do once the guard decided and CRIU ended. */
function follow(s: LazyState): Partial<LazyState> {
  if (s.source !== 'locked') return {};
  return { source: s.guard === 'kept' ? 'removed' : 'visible' };
}

function safety(s: LazyState): string | undefined {
  if (s.guard === 'kept' && !s.hadAll) return 'a kept copy had every page';
  if (s.guard === 'kept' && s.source === 'visible') return 'never a kept copy and a visible source';
  return undefined;
}

function settled(s: LazyState, c: LazyConfig): string | undefined {
  const visible = (s.guard === 'kept' ? 1 : 0) + (s.source === 'visible' ? 1 : 0);
  if (s.criu === 'serving' || s.criu === 'answered') return 'CRIU ended';
  if (s.source === 'locked' || s.source === 'frozen') return "no source left behind CRIU's lock";
  if (visible === 1) return undefined;
  if (visible === 0 && c.daemonFails && s.failed) return undefined;
  return `exactly one visible copy (found ${visible})`;
}

/** Explores every interleaving from the window's start. */
export function checkLazy(c: LazyConfig): LazyResult {
  const start: LazyState = {
    daemon: 'fetching',
    sock: 'open',
    closeSent: false,
    criu: 'serving',
    source: 'frozen',
    guard: 'window',
    link: 'up',
    reset: false,
    tool: 'alive',
    hadAll: false,
    failed: false,
    killed: false,
  };
  const seen = new Map<string, string[]>([[key(start), []]]);
  const queue: LazyState[] = [start];
  const violations: LazyResult['violations'] = [];
  const found = new Set<string>();
  const report = (invariant: string, trace: string[]) => {
    if (found.has(invariant)) return;
    found.add(invariant);
    violations.push({ invariant, trace });
  };
  while (queue.length) {
    const s = queue.shift()!;
    const trace = seen.get(key(s))!;
    const bad = safety(s);
    if (bad) report(bad, trace);
    const next = steps(s, c);
    // Settled: nothing but faults left to happen.
    if (next.every(([, , fault]) => fault)) {
      const e = s.tool === 'alive' ? 'the tool ends' : settled(s, c);
      if (e) report(e, trace);
    }
    for (const [what, n] of next) {
      const k = key(n);
      if (seen.has(k)) continue;
      seen.set(k, [...trace, what]);
      queue.push(n);
    }
  }
  return { states: seen.size, violations };
}
