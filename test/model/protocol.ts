// An exhaustive model checker of the switchover protocol: the tool (coordinator), the
// source's hold, the destination's guard, the channel between the tool and the guard,
// `migrate recover`, and the environment (a destination reboot, a crash of a running copy).
// Every interleaving of their steps and of the faults is explored breadth-first over a
// canonical state with a visited set; every state is checked against the safety invariants
// and every settled state (no progress left) against the end-state invariant.
//
// Pure: no I/O, no timers, no randomness. The same config always gives the same result.
//
// What the model assumes (and so what it can miss):
// - Time is abstracted away. A timeout or deadline is an event that may fire at any moment
//   it is enabled: the tool's timeouts (waiting for `verified`, for `committed`, for the
//   removal's confirmation) whenever the tool waits; the guard's absolute deadline Dg at
//   any time after the freeze (a guard started after it removes at once, as the real one
//   does). The only ordering kept is the one the protocol is built on: Dg + margin < Dh,
//   so the hold's deadline may fire only once the guard has reached its deadline or ended
//   (no guard alive and undecided). Heartbeat loss is enabled when no word can reach the
//   guard (partition towards it, tool gone, channel reset). Because the guard's deadline may
//   already fire at any moment, heartbeat loss adds no new interleaving: it shortens the
//   window in real time, which an untimed model cannot see (see `heartbeat` below).
// - The channel carries words tool->guard and acks guard->tool in order; any message in
//   flight may be lost; one silent partition episode (one direction or both) holds messages
//   back until it heals; one reset kills the connection (in-flight messages are gone, the
//   guard sees EOF unless the partition hides it from the guard). A dead tool's EOF travels
//   after its last words (it may be lost or held back like them). The guard's own exit is
//   not sent as an EOF to the tool: the tool's timeouts already cover it.
// - The hold is on the source machine: it reacts to its own files at once (writing
//   verdict=rollback or final=rollback resumes the source, final=commit destroys it in the
//   same step), and it sees the tool's process go at once (crash or normal end alike).
//   Merging a write with the hold's reaction only makes the source's fate take effect
//   earlier: it can report more violations, never hide one.
// - The guard restores in one step; it marks `committed` in one step and continues its copy
//   (acks `committed`, exits) in a later one. A copy crash while the guard still waits for
//   `commit` is noticed when `commit` comes (the guard removes instead of committing).
// - The tool reads the guard's files in one step (they are only ever read to decide on a
//   marker that, once there, never changes). Files are reachable iff no partition is active.
//   If they are wiped (destination reboot) the tool, after commit, treats it as in doubt.
// - `migrate recover` runs only once the tool is gone, at most bounds.recoverRuns times early,
//   one run at a time, each run as two steps: read everything (and decide), then act (so
//   anything may happen in between). In every settled state the operator's last run is
//   applied (read and act at once, the partition healed) before the end-state check.
// - Bounds: one partition episode, one destination reboot (kills the guard and its copy,
//   wipes the guard's tmpfs files), one crash of a running copy, bounds.recoverRuns early
//   recover runs. Message losses are unbounded (queues are short: the tool sends at most
//   three words and an EOF).
// - A stopped copy is invisible (the protocol's premise: nothing a client or a shared volume
//   can see; e.g. the service address must not reach it before its commit).
// - Not modelled: the source machine crashing (the hold and the intent record survive
//   everything), the guard process crashing on its own, the tool failing otherwise than by
//   a crash or a timeout (e.g. between prepare and sending commit), two recovers at once,
//   the data-copy and file-sync steps before the restore, post-copy (lazy) migration, the
//   IP address move.
//
// Invariants:
// 1. never two visible copies: the source running and the destination's copy running;
// 2. (settled states, after the operator's last recover) exactly one running copy and
//    nothing left (no guard alive, no stopped copy, no verdict left prepared), except the
//    container kept frozen on the source for the operator (reported by recover) when the
//    destination lost it; see `classifySettled` for the exact cases;
// 3. the container's state is never gone everywhere (no running copy, no frozen source,
//    no stopped copy), except when the environment destroyed a committed copy;
// plus, from the commit rule: once the guard has marked `committed`, the source is never
//    resumed (its state would roll back what the destination's clients already saw).

/** One boolean per difference between the protocol the code had and the new one. */
export interface ProtocolConfig {
  /** The guard restores its copy stopped (invisible) and continues it only at the commit. */
  leaveStopped: boolean;
  /**
   * The guard removes its copy when no word (heartbeat included) reaches it for H seconds.
   * Alone it changes no safety result here: the guard's deadline may already pass at any
   * moment in this untimed model; the heartbeat only shortens that wait in real time.
   */
  heartbeat: boolean;
  /**
   * Giving up before prepare, the tool resumes the source only once the guard's removal is
   * confirmed; unconfirmed, it ends and leaves the source to the hold. Alone it changes
   * nothing here: the hold sees the tool's process end and rolls back at once, so the source
   * resumes right away either way (not at the hold's deadline); only the copy being stopped
   * (leaveStopped) makes that safe.
   */
  toolWaitsForConfirmation: boolean;
  /** recover: the guard's committed marker is final even if the copy is not running (continue it, or keep the source frozen if it is gone). */
  committedIsFinal: boolean;
  /** recover: guard files wiped: roll back only if the record's phase says commit was never sent. */
  recoverTrustsPhase: boolean;
}

export const NEW_PROTOCOL: Readonly<ProtocolConfig> = Object.freeze({
  leaveStopped: true,
  heartbeat: true,
  toolWaitsForConfirmation: true,
  committedIsFinal: true,
  recoverTrustsPhase: true,
});

export const OLD_PROTOCOL: Readonly<ProtocolConfig> = Object.freeze({
  leaveStopped: false,
  heartbeat: false,
  toolWaitsForConfirmation: false,
  committedIsFinal: false,
  recoverTrustsPhase: false,
});

export interface Bounds {
  partitions: number;
  reboots: number;
  copyCrashes: number;
  recoverRuns: number;
}

export const DEFAULT_BOUNDS: Readonly<Bounds> = Object.freeze({
  partitions: 1,
  reboots: 1,
  copyCrashes: 1,
  recoverRuns: 2,
});

/** Where the tool is in its program ('ended': it exited by itself; 'crashed': SIGKILL). */
export type ToolPc =
  | 'freeze'
  | 'startGuard'
  | 'sendRestore'
  | 'waitVerified'
  | 'recordPrepared'
  | 'prepare'
  | 'recordCommitting'
  | 'sendCommit'
  | 'waitCommitted'
  | 'recordDestinationCommitted'
  | 'writeFinal'
  | 'abortSend'
  | 'abortWait'
  | 'askAfterCommit'
  | 'ended'
  | 'crashed';

/** The intent record's phase, on the source (survives everything). */
export type Phase = 'none' | 'frozen' | 'prepared' | 'committing' | 'destination-committed';

/**
 * The guard: 'absent' not started; 'waitRestore'/'waitCommit' alive and undecided;
 * 'committing' alive, marker `committed` written, copy not yet continued; 'committed' the
 * marker, exited; 'removed' the marker `removed`, exited; 'wiped' a reboot killed it and
 * erased its files.
 */
export type GuardState = 'absent' | 'waitRestore' | 'waitCommit' | 'committing' | 'committed' | 'removed' | 'wiped';

export type Word = 'restore' | 'commit' | 'remove' | 'EOF';
export type Ack = 'verified' | 'committed' | 'removed';
export type Partition = 'none' | 'toGuard' | 'toTool' | 'both';
/** What a recover run decided to do, between its reading and its acting. */
export type RecoverAction = 'commit' | 'rollback' | 'remove';

export interface State {
  tool: ToolPc;
  phase: Phase;
  /** 'running': never frozen; 'resumed': running again after a rollback; 'destroyed': after final=commit. */
  source: 'running' | 'frozen' | 'resumed' | 'destroyed';
  verdict: 'prepared' | 'rollback' | null;
  final: 'commit' | 'rollback' | null;
  guard: GuardState;
  copy: 'none' | 'stopped' | 'running';
  /** Messages in flight, oldest first. */
  toGuard: Word[];
  toTool: Ack[];
  partition: Partition;
  /** The connection was reset (or its far end rebooted): nothing more goes through it. */
  reset: boolean;
  recoverPending: RecoverAction | null;
  partitionsUsed: number;
  rebootsUsed: number;
  copyCrashesUsed: number;
  recoverRuns: number;
  /** The guard's absolute deadline Dg has passed (a guard started after it removes at once). */
  dgPassed: boolean;
  /** Ghost: the guard has written its `committed` marker at some point (a reboot wipes the file, not this). */
  everCommitted: boolean;
  /** Ghost: the environment (reboot, crash) destroyed a copy after the guard's commit. */
  committedCopyLost: boolean;
}

export function initialState(): State {
  return {
    tool: 'freeze',
    phase: 'none',
    source: 'running',
    verdict: null,
    final: null,
    guard: 'absent',
    copy: 'none',
    toGuard: [],
    toTool: [],
    partition: 'none',
    reset: false,
    recoverPending: null,
    partitionsUsed: 0,
    rebootsUsed: 0,
    copyCrashesUsed: 0,
    recoverRuns: 0,
    dgPassed: false,
    everCommitted: false,
    committedCopyLost: false,
  };
}

/**
 * The state's canonical serialisation: its fields' values in the order of their sorted
 * names (every state has exactly the fields of initialState(); the values are strings,
 * numbers, booleans, null and arrays whose order means something). Equal states give
 * equal keys and different states different keys.
 */
const STATE_FIELDS = (Object.keys(initialState()) as Array<keyof State>).sort();
export function stateKey(s: State): string {
  return JSON.stringify(STATE_FIELDS.map((f) => s[f]));
}

/** One transition. A fault is something the model may inject but never has to: settled states ignore them. */
export interface Step {
  event: string;
  next: State;
  fault: boolean;
}

// ---------------------------------------------------------------------------------------
// Helpers: small facts, and the writes with the hold's immediate reaction.

function clone(s: State): State {
  return { ...s, toGuard: s.toGuard.slice(), toTool: s.toTool.slice() };
}

export const toolGone = (s: State) => s.tool === 'ended' || s.tool === 'crashed';
const guardUndecided = (s: State) => s.guard === 'waitRestore' || s.guard === 'waitCommit';
const guardAlive = (s: State) => guardUndecided(s) || s.guard === 'committing';
const guardMarkedCommitted = (s: State) => s.guard === 'committing' || s.guard === 'committed';
const blockedToGuard = (s: State) => s.partition === 'toGuard' || s.partition === 'both';
const blockedToTool = (s: State) => s.partition === 'toTool' || s.partition === 'both';
/** The destination's files and runc can be read (over a new SSH connection). */
const reachable = (s: State) => s.partition === 'none';
const sourceVisible = (s: State) => s.source === 'running' || s.source === 'resumed';
const PHASES: Phase[] = ['none', 'frozen', 'prepared', 'committing', 'destination-committed'];
const phaseAtLeast = (s: State, p: Phase) => PHASES.indexOf(s.phase) >= PHASES.indexOf(p);

function verdictRollback(x: State): void {
  if (x.verdict !== null) return; // first writer wins
  x.verdict = 'rollback';
  if (x.source === 'frozen') x.source = 'resumed';
}

function writeFinal(x: State, v: 'commit' | 'rollback'): void {
  if (x.verdict !== 'prepared') throw new Error(`model bug: final=${v} written without verdict=prepared`);
  if (x.final !== null) return; // first writer wins
  x.final = v;
  if (x.source === 'frozen') x.source = v === 'commit' ? 'destroyed' : 'resumed';
}

function sendWord(x: State, w: Word): void {
  if (!x.reset) x.toGuard.push(w); // over a reset connection the write fails: nothing is sent
}

function sendAck(x: State, a: Ack): void {
  if (!x.reset) x.toTool.push(a);
}

/** The guard kills and deletes its copy, writes `removed`, acks, exits. */
function guardRemoves(x: State): void {
  x.copy = 'none';
  x.guard = 'removed';
  sendAck(x, 'removed');
}

/** The tool's process goes (exit or SIGKILL): its end of the channel closes after its last words. */
function toolEnds(x: State, how: 'ended' | 'crashed'): void {
  x.tool = how;
  sendWord(x, 'EOF');
}

// ---------------------------------------------------------------------------------------
// The participants, one function each: the steps each can take from a state.

type Emit = (event: string, change: (x: State) => void, fault?: boolean) => void;

function stepper(s: State, out: Step[]): Emit {
  return (event, change, fault = false) => {
    const x = clone(s);
    change(x);
    out.push({ event, next: x, fault });
  };
}

/** The tool: its program, its timeouts, the acks it reads, and its crash. */
function toolSteps(s: State, cfg: ProtocolConfig, emit: Emit): void {
  const ack = s.toTool.length > 0 && !blockedToTool(s) ? s.toTool[0] : undefined;
  if (toolGone(s)) {
    if (ack) emit(`net: ack ${ack} reaches no one (the tool is gone)`, (x) => void x.toTool.shift());
    return;
  }
  emit('tool: crashes (SIGKILL)', (x) => toolEnds(x, 'crashed'), true);
  /** An ack the tool does not wait for in its current step: read and dropped. */
  const ignore = (a: Ack) => emit(`tool: ignores ack ${a}`, (x) => void x.toTool.shift());
  switch (s.tool) {
    case 'freeze':
      emit('tool: freezes the source (the hold holds it)', (x) => {
        x.source = 'frozen';
        x.phase = 'frozen';
        x.tool = 'startGuard';
      });
      break;
    case 'startGuard':
      emit(`tool: starts the guard${s.dgPassed ? ' (past its deadline: it removes at once)' : ''}`, (x) => {
        x.guard = 'waitRestore';
        if (x.dgPassed) guardRemoves(x);
        x.tool = 'sendRestore';
      });
      break;
    case 'sendRestore':
      emit('tool: sends restore', (x) => {
        sendWord(x, 'restore');
        x.tool = 'waitVerified';
      });
      break;
    case 'waitVerified':
      if (ack === 'verified')
        emit('tool: gets verified', (x) => {
          x.toTool.shift();
          x.tool = 'recordPrepared';
        });
      else if (ack === 'removed')
        emit('tool: gets removed before prepare (confirmed) -> verdict=rollback, ends', (x) => {
          x.toTool.shift();
          verdictRollback(x);
          toolEnds(x, 'ended');
        });
      else if (ack) ignore(ack);
      emit('tool: timeout/channel closed waiting for verified -> gives up', (x) => void (x.tool = 'abortSend'));
      break;
    case 'recordPrepared':
      emit('tool: records phase prepared', (x) => {
        x.phase = 'prepared';
        x.tool = 'prepare';
      });
      break;
    case 'prepare':
      if (s.verdict === null)
        emit('tool: prepare (verdict=prepared)', (x) => {
          x.verdict = 'prepared';
          x.tool = 'recordCommitting';
        });
      else emit('tool: prepare fails (the hold already rolled back) -> gives up', (x) => void (x.tool = 'abortSend'));
      break;
    case 'recordCommitting':
      emit('tool: records phase committing', (x) => {
        x.phase = 'committing';
        x.tool = 'sendCommit';
      });
      break;
    case 'sendCommit':
      emit('tool: sends commit', (x) => {
        sendWord(x, 'commit');
        x.tool = 'waitCommitted';
      });
      break;
    case 'waitCommitted':
      if (ack === 'committed')
        emit('tool: gets committed', (x) => {
          x.toTool.shift();
          x.tool = 'recordDestinationCommitted';
        });
      else if (ack === 'removed')
        emit('tool: gets removed after commit was sent -> asks the files', (x) => {
          x.toTool.shift();
          x.tool = 'askAfterCommit';
        });
      else if (ack) ignore(ack);
      emit(
        'tool: timeout/channel closed waiting for committed -> asks the files',
        (x) => void (x.tool = 'askAfterCommit'),
      );
      break;
    case 'recordDestinationCommitted':
      emit('tool: records phase destination-committed', (x) => {
        x.phase = 'destination-committed';
        x.tool = 'writeFinal';
      });
      break;
    case 'writeFinal':
      emit('tool: final=commit, done', (x) => {
        writeFinal(x, 'commit');
        toolEnds(x, 'ended');
      });
      break;
    case 'abortSend':
      emit('tool: tells the guard remove', (x) => {
        sendWord(x, 'remove');
        x.tool = 'abortWait';
      });
      break;
    case 'abortWait': {
      if (ack === 'removed')
        emit('tool: gets removed (confirmed) -> verdict=rollback, ends', (x) => {
          x.toTool.shift();
          verdictRollback(x);
          toolEnds(x, 'ended');
        });
      else if (ack) ignore(ack);
      const confirmed = reachable(s) && s.guard === 'removed';
      if (confirmed)
        emit("tool: no ack, the guard's files say removed (confirmed) -> verdict=rollback, ends", (x) => {
          verdictRollback(x);
          toolEnds(x, 'ended');
        });
      else if (cfg.toolWaitsForConfirmation)
        emit('tool: removal not confirmed -> leaves the source to the hold, ends', (x) => toolEnds(x, 'ended'));
      else
        emit('tool: removal not confirmed -> resumes the source anyway (verdict=rollback), ends', (x) => {
          verdictRollback(x);
          toolEnds(x, 'ended');
        });
      break;
    }
    case 'askAfterCommit':
      if (ack) ignore(ack);
      if (!reachable(s))
        emit('tool: the destination is unreachable -> in doubt, ends (source frozen)', (x) => toolEnds(x, 'ended'));
      else if (guardMarkedCommitted(s))
        emit("tool: the guard's files say committed -> final=commit, ends", (x) => {
          writeFinal(x, 'commit');
          toolEnds(x, 'ended');
        });
      else if (s.guard === 'removed')
        emit("tool: the guard's files say removed -> final=rollback, ends", (x) => {
          writeFinal(x, 'rollback');
          toolEnds(x, 'ended');
        });
      else if (s.guard === 'wiped')
        emit("tool: the guard's files are gone -> in doubt, ends (source frozen)", (x) => toolEnds(x, 'ended'));
      // Alive and undecided: the tool asks again later (no change until something else moves).
      break;
    case 'ended':
    case 'crashed':
      break;
  }
}

/** The source's hold: rolls back by itself before `prepared`, never after. */
function holdSteps(s: State, _cfg: ProtocolConfig, emit: Emit): void {
  if (s.source !== 'frozen' || s.verdict !== null) return;
  if (toolGone(s)) emit('hold: the tool is gone -> verdict=rollback, source runs', verdictRollback);
  // Dg + margin < Dh: the hold's deadline comes only after the guard reached its own (or ended).
  const guardEnded = s.guard === 'committed' || s.guard === 'removed' || s.guard === 'wiped';
  if (s.dgPassed || guardEnded) emit('hold: deadline Dh -> verdict=rollback, source runs', verdictRollback);
}

/** The destination's guard: the words it reads, its deadline, its heartbeat rule, its commit. */
function guardSteps(s: State, cfg: ProtocolConfig, emit: Emit): void {
  const word = s.toGuard.length > 0 && !blockedToGuard(s) ? s.toGuard[0] : undefined;
  // The absolute deadline (set from the freeze): it may pass at any time, even before the
  // guard starts. Once the guard has ended or committed, it changes nothing any more.
  if (!s.dgPassed && s.phase !== 'none' && (s.guard === 'absent' || guardUndecided(s)))
    emit(`guard: deadline Dg passes${guardUndecided(s) ? ' -> removes its copy' : ''}`, (x) => {
      x.dgPassed = true;
      if (guardUndecided(x)) guardRemoves(x);
    });
  if (guardUndecided(s)) {
    if (word !== undefined) {
      if (s.guard === 'waitRestore' && word === 'restore')
        emit(`guard: restores the copy ${cfg.leaveStopped ? 'STOPPED' : 'RUNNING'}, acks verified`, (x) => {
          x.toGuard.shift();
          x.copy = cfg.leaveStopped ? 'stopped' : 'running';
          x.guard = 'waitCommit';
          sendAck(x, 'verified');
        });
      else if (s.guard === 'waitCommit' && word === 'commit' && s.copy !== 'none')
        emit('guard: gets commit -> writes marker committed', (x) => {
          x.toGuard.shift();
          x.guard = 'committing';
          x.everCommitted = true;
        });
      else
        emit(`guard: gets ${word} -> removes its copy`, (x) => {
          x.toGuard.shift();
          guardRemoves(x);
        });
    }
    if (cfg.heartbeat && (blockedToGuard(s) || toolGone(s) || s.reset))
      emit('guard: heartbeat lost -> removes its copy', guardRemoves);
    return;
  }
  if (s.guard === 'committing') {
    emit('guard: continues the copy, acks committed, exits', (x) => {
      if (x.copy === 'stopped') x.copy = 'running';
      x.guard = 'committed';
      sendAck(x, 'committed');
    });
    return;
  }
  // No guard reads the channel any more: what arrives is dropped.
  if (word !== undefined && s.guard !== 'absent')
    emit(`net: word ${word} reaches no one (the guard has ended)`, (x) => void x.toGuard.shift());
}

/** The channel's faults: loss, one partition episode (and its healing), one reset. */
function channelSteps(s: State, bounds: Bounds, emit: Emit): void {
  if (s.toGuard.length > 0) emit(`net: word ${s.toGuard[0]} lost`, (x) => void x.toGuard.shift(), true);
  if (s.toTool.length > 0) emit(`net: ack ${s.toTool[0]} lost`, (x) => void x.toTool.shift(), true);
  if (s.guard === 'absent') return; // no channel yet
  if (s.partition === 'none' && s.partitionsUsed < bounds.partitions) {
    for (const p of ['both', 'toGuard', 'toTool'] as const) {
      emit(
        `net: silent partition (${p === 'both' ? 'both ways' : p === 'toGuard' ? 'tool->guard' : 'guard->tool'})`,
        (x) => {
          x.partition = p;
          x.partitionsUsed += 1;
        },
        true,
      );
    }
  }
  if (s.partition !== 'none') emit('net: the partition heals', (x) => void (x.partition = 'none'));
  if (!s.reset)
    emit(
      `net: connection reset${blockedToGuard(s) ? ' (hidden from the guard by the partition)' : ' (the guard sees EOF)'}`,
      (x) => {
        x.reset = true;
        x.toGuard = [];
        x.toTool = [];
        if (guardUndecided(x) && !blockedToGuard(x)) guardRemoves(x);
      },
      true,
    );
}

/** The environment: a destination reboot, a crash of a running copy. */
function environmentSteps(s: State, bounds: Bounds, emit: Emit): void {
  if (s.rebootsUsed < bounds.reboots && s.guard !== 'absent' && s.guard !== 'wiped')
    emit(
      'env: the destination reboots (guard and copy killed, its files wiped)',
      (x) => {
        if (x.copy !== 'none' && guardMarkedCommitted(x)) x.committedCopyLost = true;
        x.copy = 'none';
        x.guard = 'wiped';
        x.reset = true;
        x.toGuard = [];
        x.toTool = [];
        x.rebootsUsed += 1;
      },
      true,
    );
  if (s.copyCrashesUsed < bounds.copyCrashes && s.copy === 'running')
    emit(
      "env: the destination's running copy crashes",
      (x) => {
        if (guardMarkedCommitted(x) || x.final === 'commit') x.committedCopyLost = true;
        x.copy = 'none';
        x.copyCrashesUsed += 1;
      },
      true,
    );
}

export interface RecoverDecision {
  /** What recover reports to the operator. */
  report: 'destination' | 'source' | 'in-doubt' | 'wait' | 'lost-after-commit';
  action: RecoverAction | null;
  why: string;
}

/** What `migrate recover` decides from what it reads now. */
export function decideRecover(s: State, cfg: ProtocolConfig): RecoverDecision {
  if (s.final === 'commit') return { report: 'destination', action: 'commit', why: 'final=commit' };
  if (s.final === 'rollback') return { report: 'source', action: 'remove', why: 'final=rollback' };
  if (s.verdict === 'rollback') return { report: 'source', action: 'remove', why: 'verdict=rollback' };
  if (s.verdict === 'prepared') {
    if (!reachable(s)) return { report: 'in-doubt', action: null, why: 'prepared, destination unreachable' };
    switch (s.guard) {
      case 'committing':
      case 'committed':
        if (s.copy === 'running')
          return { report: 'destination', action: 'commit', why: 'prepared, guard committed, copy running' };
        if (cfg.committedIsFinal) {
          if (s.copy === 'stopped')
            return {
              report: 'destination',
              action: 'commit',
              why: 'prepared, guard committed, copy stopped (continue it)',
            };
          return {
            report: 'lost-after-commit',
            action: null,
            why: 'prepared, guard committed, copy gone: keep the source frozen',
          };
        }
        return { report: 'source', action: 'rollback', why: 'prepared, guard committed, copy not running' };
      case 'waitRestore':
      case 'waitCommit':
        return { report: 'wait', action: null, why: 'prepared, guard alive and undecided' };
      case 'removed':
        return { report: 'source', action: 'rollback', why: 'prepared, guard removed' };
      case 'wiped':
        if (cfg.recoverTrustsPhase && phaseAtLeast(s, 'committing'))
          return {
            report: 'in-doubt',
            action: null,
            why: `prepared, guard files wiped, phase ${s.phase}: commit may have been delivered`,
          };
        return { report: 'source', action: 'rollback', why: `prepared, guard files wiped, phase ${s.phase}` };
      case 'absent':
        throw new Error('model bug: verdict=prepared without a guard ever started');
    }
  }
  if (s.source === 'frozen') return { report: 'wait', action: null, why: 'no verdict, the checkpoint still holds' };
  return { report: 'source', action: null, why: 'no verdict, nothing held' };
}

/** recover acting on what it decided (it may have read a while ago). */
function recoverActs(x: State, action: RecoverAction): void {
  switch (action) {
    case 'commit':
      writeFinal(x, 'commit');
      if (x.final === 'commit' && reachable(x) && x.copy === 'stopped') x.copy = 'running';
      break;
    case 'rollback':
      writeFinal(x, 'rollback');
      break;
    case 'remove':
      if (reachable(x)) {
        x.copy = 'none';
        if (guardAlive(x)) x.guard = 'removed';
      }
      break;
  }
}

/** `migrate recover`: refused while the tool lives; read, then act. */
function recoverSteps(s: State, cfg: ProtocolConfig, bounds: Bounds, emit: Emit): void {
  if (s.recoverPending !== null) {
    const action = s.recoverPending;
    emit(`recover: acts (${action})`, (x) => {
      x.recoverPending = null;
      recoverActs(x, action);
    });
    return;
  }
  if (!toolGone(s) || s.recoverRuns >= bounds.recoverRuns) return;
  const d = decideRecover(s, cfg);
  emit(
    `recover #${s.recoverRuns + 1}: reads (${d.why}) -> ${d.report}`,
    (x) => {
      x.recoverRuns += 1;
      x.recoverPending = d.action;
    },
    true,
  );
}

/** Every step enabled in a state. */
export function successors(s: State, cfg: ProtocolConfig, bounds: Bounds = DEFAULT_BOUNDS): Step[] {
  const out: Step[] = [];
  const emit = stepper(s, out);
  toolSteps(s, cfg, emit);
  holdSteps(s, cfg, emit);
  guardSteps(s, cfg, emit);
  channelSteps(s, bounds, emit);
  environmentSteps(s, bounds, emit);
  recoverSteps(s, cfg, bounds, emit);
  return out;
}

// ---------------------------------------------------------------------------------------
// The invariants.

export type ViolationKind = 'two-visible-copies' | 'source-resumed-after-commit' | 'state-lost' | 'not-settled';

/** Invariants 1 and 3, and "never resume after commit": checked at every state. */
export function checkState(s: State): { kind: ViolationKind; detail: string } | undefined {
  if (sourceVisible(s) && s.copy === 'running')
    return { kind: 'two-visible-copies', detail: 'the source and the destination copy both run' };
  if (s.everCommitted && s.source === 'resumed')
    return { kind: 'source-resumed-after-commit', detail: 'the guard marked committed, yet the source was resumed' };
  const somewhere = sourceVisible(s) || s.source === 'frozen' || s.copy !== 'none';
  if (!somewhere && !s.committedCopyLost)
    return {
      kind: 'state-lost',
      detail: "the container's state is nowhere (no running copy, no frozen source, no stopped copy)",
    };
  return undefined;
}

/** How a settled state ends once the operator ran recover to its end. */
export type Outcome =
  /** Exactly one copy runs, on that host, and nothing is left behind. */
  | 'source'
  | 'destination'
  /** The destination lost its copy after marking committed: the source is kept frozen, reported. */
  | 'kept-frozen-lost-after-commit'
  /**
   * The destination rebooted after the record said `committing` and no marker says whether
   * commit arrived before the reboot: the source is kept frozen, reported in doubt. Nothing
   * was committed in fact, but no one can know.
   */
  | 'kept-frozen-in-doubt'
  /** The environment destroyed the only copy after final=commit (the source was already gone). */
  | 'lost-by-environment-after-final-commit';

export function classifySettled(
  s: State,
  cfg: ProtocolConfig,
): { outcome: Outcome; after: State; report: string } | { violation: string; after: State; report: string } {
  const d = decideRecover(s, cfg);
  const after = clone(s);
  if (!toolGone(s))
    return { violation: `no progress left while the tool is at ${s.tool} (a deadlock)`, after, report: 'not run' };
  if (d.action) recoverActs(after, d.action);
  const report = `${d.report} (${d.why})`;
  const visible = (sourceVisible(after) ? 1 : 0) + (after.copy === 'running' ? 1 : 0);
  if (visible === 1) {
    const left: string[] = [];
    if (guardAlive(after)) left.push('a guard alive');
    if (after.copy === 'stopped') left.push('a stopped copy');
    if (after.source === 'frozen') left.push('a frozen source');
    if (after.verdict === 'prepared' && after.final === null) left.push('verdict prepared without final');
    if (left.length) return { violation: `one copy runs but left behind: ${left.join(', ')}`, after, report };
    return { outcome: sourceVisible(after) ? 'source' : 'destination', after, report };
  }
  if (visible === 0) {
    const reported = d.report === 'in-doubt' || d.report === 'lost-after-commit';
    if (after.source === 'frozen' && reported && after.everCommitted)
      return { outcome: 'kept-frozen-lost-after-commit', after, report };
    if (after.source === 'frozen' && reported && after.guard === 'wiped')
      return { outcome: 'kept-frozen-in-doubt', after, report };
    if (after.source === 'destroyed' && after.final === 'commit' && after.committedCopyLost)
      return { outcome: 'lost-by-environment-after-final-commit', after, report };
    return { violation: 'nothing runs', after, report };
  }
  return { violation: 'two copies run', after, report };
}

// ---------------------------------------------------------------------------------------
// The explorer.

export interface Violation {
  kind: ViolationKind;
  detail: string;
  /** The events from the initial state to the violating state. */
  trace: string[];
  state: State;
}

export interface Exploration {
  states: number;
  transitions: number;
  settled: number;
  violations: Violation[];
  outcomes: Partial<Record<Outcome, number>>;
  /** One shortest trace per outcome, ending with the operator's last recover. */
  examples: Partial<Record<Outcome, { trace: string[]; state: State }>>;
  /** Every settled state kept frozen in doubt (for the caller to characterise). */
  inDoubt: State[];
}

export interface ExploreOptions {
  bounds?: Bounds;
  /** Stop at the first violation found (BFS: one with a shortest trace). */
  stopAtFirst?: boolean;
  /** A safety net against a state space that does not close. */
  maxStates?: number;
}

export function explore(cfg: ProtocolConfig, opts: ExploreOptions = {}): Exploration {
  const bounds = opts.bounds ?? DEFAULT_BOUNDS;
  const maxStates = opts.maxStates ?? 2_000_000;
  const start = initialState();
  const startKey = stateKey(start);
  const parent = new Map<string, { from: string | null; event: string | null }>([
    [startKey, { from: null, event: null }],
  ]);
  const queue: Array<[string, State]> = [[startKey, start]];
  const result: Exploration = {
    states: 0,
    transitions: 0,
    settled: 0,
    violations: [],
    outcomes: {},
    examples: {},
    inDoubt: [],
  };
  const traceOf = (key: string): string[] => {
    const events: string[] = [];
    for (let k: string | null = key; k !== null; ) {
      const p: { from: string | null; event: string | null } = parent.get(k)!;
      if (p.event !== null) events.push(p.event);
      k = p.from;
    }
    return events.reverse();
  };
  for (let head = 0; head < queue.length; head++) {
    const [key, s] = queue[head];
    queue[head] = undefined as unknown as [string, State]; // let the explored states go
    result.states += 1;
    if (result.states > maxStates) throw new Error(`more than ${maxStates} states: the model does not close`);
    const bad = checkState(s);
    if (bad) {
      result.violations.push({ ...bad, trace: traceOf(key), state: s });
      if (opts.stopAtFirst) break;
      continue; // a violating state is not explored further
    }
    const steps = successors(s, cfg, bounds);
    if (!steps.some((st) => !st.fault)) {
      result.settled += 1;
      const c = classifySettled(s, cfg);
      if ('violation' in c) {
        result.violations.push({
          kind: 'not-settled',
          detail: `${c.violation}; recover reported ${c.report}`,
          trace: [...traceOf(key), `operator: recover -> ${c.report}`],
          state: c.after,
        });
        if (opts.stopAtFirst) break;
      } else {
        result.outcomes[c.outcome] = (result.outcomes[c.outcome] ?? 0) + 1;
        result.examples[c.outcome] ??= { trace: [...traceOf(key), `operator: recover -> ${c.report}`], state: c.after };
        if (c.outcome === 'kept-frozen-in-doubt') result.inDoubt.push(s);
      }
    }
    for (const st of steps) {
      result.transitions += 1;
      const k = stateKey(st.next);
      if (parent.has(k)) continue;
      parent.set(k, { from: key, event: st.event });
      queue.push([k, st.next]);
    }
  }
  return result;
}

/** A trace as numbered lines, for assertion messages and reports. */
export function formatTrace(trace: string[]): string {
  return trace.map((e, i) => `${String(i + 1).padStart(3)}. ${e}`).join('\n');
}

/** Follows the given events (exact labels) from the initial state: a hand-written scenario. */
export function replay(cfg: ProtocolConfig, events: string[], bounds: Bounds = DEFAULT_BOUNDS): State {
  let s = initialState();
  for (const [i, event] of events.entries()) {
    const steps = successors(s, cfg, bounds);
    const step = steps.find((st) => st.event === event);
    if (!step)
      throw new Error(`step ${i + 1} "${event}" is not enabled; enabled: ${steps.map((st) => st.event).join(' | ')}`);
    s = step.next;
  }
  return s;
}
