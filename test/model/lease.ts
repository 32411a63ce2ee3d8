// An exhaustive model checker of replication's fencing (src/migration/replica/lease.ts):
// the replicating tool renewing its lease on the standby, the source's fence (a watchdog
// that freezes the container when the lease it knows of runs out, whether the tool lives
// or not), the network between them, and failover attempts on the standby. Every
// interleaving of their steps over discrete time is explored breadth-first with a visited
// set, and every state is checked against the one safety invariant: never two running
// copies (the source's container running while the standby's restored copy runs).
//
// Pure: no I/O, no timers, no randomness. The decisions are the real ones (renew,
// failover, runsUntil from lease.ts); what is modelled around them:
// - Time advances in ticks; both hosts' clocks advance together (a difference in their
//   rates is what the real margin covers, with the time a freeze takes; neither is here,
//   so the model holds with a margin of 0 and the real margin is pure slack).
// - A renewal is a request and a reply; each may be delayed any number of ticks or lost,
//   at most `maxInflight` at once. The standby answers a request in one locked step at the
//   tick it arrives; failover decides and marks the lease in one locked step.
// - The fence acts at the tick boundary at which the source's deadline is reached.
// - The tool may die at any moment; the fence goes on without it. The tool thaws a frozen
//   container only on a confirmed renewal whose count has not run out.
// - Not modelled: the source host's crash (its container dies with it), the standby's
//   reboot (the lease file is on its disk), two replicating tools (renew refuses a second
//   holder; a test of its own).

import { failover, renew, runsUntil, type LeaseRecord } from '../../src/migration/replica/lease.js';

export interface LeaseConfig {
  readonly leaseTicks: number;
  readonly marginTicks: number;
  readonly horizon: number;
  readonly maxInflight: number;
  /** The real rule counts from the renewal's sending; 'reply' is the wrong rule, kept to show the model catches it. */
  readonly countFrom: 'sent' | 'reply';
  /** --fence: 'none' does not freeze; failover must then be confirmed or forced. */
  readonly fence: 'freeze' | 'none';
  /** failover --force (the operator's override), for the 'none' fence's documented risk. */
  readonly force: boolean;
}

export const REAL: LeaseConfig = {
  leaseTicks: 4,
  marginTicks: 0,
  horizon: 8,
  maxInflight: 2,
  countFrom: 'sent',
  fence: 'freeze',
  force: false,
};

interface Msg {
  readonly sent: number;
  readonly kind: 'req' | 'rep';
  readonly answer?: 'renewed' | 'failed-over' | 'held';
}

export interface State {
  readonly t: number;
  readonly tool: 'alive' | 'dead';
  readonly src: 'running' | 'frozen' | 'stopped';
  /** The source's deadline (its count of the lease it knows of). */
  readonly deadline: number;
  readonly inflight: readonly Msg[];
  readonly lease?: LeaseRecord;
  readonly standby: 'none' | 'running';
}

export interface Violation {
  readonly trace: readonly string[];
  readonly state: State;
}

export interface Exploration {
  readonly states: number;
  readonly violations: Violation[];
  /** States in which the source was frozen while the tool lived and no failover happened (availability lost). */
  readonly frozenAlive: number;
}

const SEC = 1000;

function key(s: State): string {
  const msgs = [...s.inflight].map((m) => `${m.kind}${m.sent}${m.answer ?? ''}`).sort();
  const l = s.lease ? `${s.lease.expiresAt}/${s.lease.failedOver ? 'F' : ''}` : '-';
  return `${s.t}|${s.tool}|${s.src}|${s.deadline}|${msgs.join(',')}|${l}|${s.standby}`;
}

export function initialState(c: LeaseConfig): State {
  // replicate takes the lease before anything else: a renewal sent at 0 and confirmed at 0.
  const first = renew(undefined, 0, 'src', c.leaseTicks * SEC, c.fence);
  if (first.answer !== 'renewed') throw new Error('the first renewal must succeed');
  return {
    t: 0,
    tool: 'alive',
    src: 'running',
    deadline: runsUntil(0, c.leaseTicks * SEC, c.marginTicks * SEC) / SEC,
    inflight: [],
    lease: first.record,
    standby: 'none',
  };
}

function successors(c: LeaseConfig, s: State): Array<[string, State]> {
  const out: Array<[string, State]> = [];
  if (s.t < c.horizon) {
    const t = s.t + 1;
    const freezes = c.fence === 'freeze' && s.src === 'running' && t >= s.deadline;
    out.push([
      `tick to ${t}${freezes ? ' (the fence freezes the source)' : ''}`,
      { ...s, t, src: freezes ? 'frozen' : s.src },
    ]);
  }
  if (s.tool === 'alive' && s.src !== 'stopped' && s.inflight.length < c.maxInflight) {
    out.push([`the tool sends a renewal at ${s.t}`, { ...s, inflight: [...s.inflight, { sent: s.t, kind: 'req' }] }]);
  }
  s.inflight.forEach((m, i) => {
    const rest = s.inflight.filter((_, j) => j !== i);
    out.push([`the ${m.kind === 'req' ? 'renewal' : 'reply'} sent at ${m.sent} is lost`, { ...s, inflight: rest }]);
    if (m.kind === 'req') {
      const a = renew(s.lease, s.t * SEC, 'src', c.leaseTicks * SEC, c.fence);
      const lease = a.answer === 'renewed' ? a.record : s.lease;
      out.push([
        `the standby answers the renewal sent at ${m.sent}: ${a.answer}`,
        { ...s, lease, inflight: [...rest, { sent: m.sent, kind: 'rep', answer: a.answer }] },
      ]);
    } else if (s.tool === 'alive') {
      if (m.answer === 'renewed') {
        const from = c.countFrom === 'sent' ? m.sent : s.t;
        const deadline = Math.max(s.deadline, runsUntil(from * SEC, c.leaseTicks * SEC, c.marginTicks * SEC) / SEC);
        const thaw = s.src === 'frozen' && s.t < deadline;
        out.push([
          `the tool hears renewed (sent at ${m.sent}): runs until ${deadline}${thaw ? ', thaws the source' : ''}`,
          { ...s, inflight: rest, deadline, src: thaw ? 'running' : s.src },
        ]);
      } else if (m.answer === 'failed-over') {
        out.push([`the tool hears failed-over: the source stays stopped`, { ...s, inflight: rest, src: 'stopped' }]);
      } else {
        out.push([`the tool hears ${m.answer}`, { ...s, inflight: rest }]);
      }
    }
  });
  if (s.tool === 'alive') out.push(['the tool dies', { ...s, tool: 'dead' }]);
  if (s.standby === 'none') {
    const a = failover(s.lease, s.t * SEC, { sourceConfirmedStopped: false, force: c.force, by: 'operator' });
    if ('go' in a) out.push([`failover at ${s.t}: the standby's copy runs`, { ...s, lease: a.go, standby: 'running' }]);
  }
  return out;
}

export function explore(c: LeaseConfig): Exploration {
  const start = initialState(c);
  const seen = new Map<string, { from?: string; step?: string }>([[key(start), {}]]);
  const queue: State[] = [start];
  const violations: Violation[] = [];
  let frozenAlive = 0;
  const traceOf = (k: string): string[] => {
    const steps: string[] = [];
    for (let cur = seen.get(k); cur?.from !== undefined; cur = seen.get(cur.from)) steps.unshift(cur.step ?? '');
    return steps;
  };
  while (queue.length) {
    const s = queue.shift();
    if (!s) break;
    const k = key(s);
    if (s.src === 'running' && s.standby === 'running') {
      if (violations.length < 5) violations.push({ trace: traceOf(k), state: s });
      continue;
    }
    if (s.src === 'frozen' && s.tool === 'alive' && s.standby === 'none') frozenAlive++;
    for (const [step, n] of successors(c, s)) {
      const nk = key(n);
      if (seen.has(nk)) continue;
      seen.set(nk, { from: k, step });
      queue.push(n);
    }
  }
  return { states: seen.size, violations, frozenAlive };
}
