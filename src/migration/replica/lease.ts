// Fencing for replication (`migrate replicate` / `migrate failover`): never two running
// copies. The replicating tool holds a lease on the standby, renewed every interval; times
// in the lease are the standby's clock, read and written under the standby's lock, so the
// two hosts' clocks never have to agree. The source runs only while a lease it knows of
// has not expired, counted on its own monotonic clock from the moment it SENT the renewal
// the standby confirmed (the standby counted from a later moment, so the source's count
// ends first), less a margin for the clocks' rate drift and the time a freeze takes.
// Failover restores only once the lease has expired, and marks the lease failed over in
// the same locked step: a renewal that arrives later is refused, and the source, once it
// hears that, stays stopped.
//
// Pure decisions; test/model/lease.ts explores them against every interleaving of
// renewals, delays, losses, the tool's death and failover attempts.

/**
 * The lease as the standby keeps it. Its times are the standby's monotonic clock
 * (/proc/uptime, milliseconds) in the boot `boot` names: a wall clock that NTP steps
 * forward would end a lease early. (leasefile.ts reads the clock and rebases a lease of
 * an earlier boot.)
 */
export interface LeaseRecord {
  /** Who replicates (the source host and the tool's pid): a second replicate is refused. */
  readonly holder: string;
  readonly expiresAt: number;
  /**
   * freeze: the source freezes its container when it cannot renew in time, so expiry
   * alone makes failover safe. none: it does not, so failover must also hear from the
   * source (--source) or be forced.
   */
  readonly fence: 'freeze' | 'none';
  /** Replication ended cleanly (the source still runs the container). */
  readonly released?: boolean;
  /** Set by failover in the step that restores: from then on no renewal succeeds. `at`: the standby's wall clock (for people). */
  readonly failedOver?: { readonly at: number; readonly by: string };
  /** The lease's length: after a reboot of the standby the lease ends this long after the boot. */
  readonly leaseMs?: number;
  /** The standby's boot (its /proc/sys/kernel/random/boot_id) whose clock expiresAt is on. */
  readonly boot?: string;
}

export type RenewAnswer =
  | { readonly answer: 'renewed'; readonly record: LeaseRecord }
  | { readonly answer: 'failed-over'; readonly at: number; readonly by: string }
  | { readonly answer: 'held'; readonly by: string; readonly leftMs: number };

/** The standby's answer to a renewal by HOLDER at NOW (its clock), decided under its lock. */
export function renew(
  rec: LeaseRecord | undefined,
  now: number,
  holder: string,
  leaseMs: number,
  fence: LeaseRecord['fence'],
): RenewAnswer {
  if (rec?.failedOver) return { answer: 'failed-over', at: rec.failedOver.at, by: rec.failedOver.by };
  if (rec && rec.holder !== holder && !rec.released && rec.expiresAt > now)
    return { answer: 'held', by: rec.holder, leftMs: rec.expiresAt - now };
  return { answer: 'renewed', record: { holder, expiresAt: now + leaseMs, fence, leaseMs } };
}

/** What failover knows besides the lease. */
export interface FailoverAsk {
  /** --source HOST answered: the container does not run there (or was stopped there now). */
  readonly sourceConfirmedStopped: boolean;
  /** --force: the operator takes the risk of two running copies. */
  readonly force: boolean;
  /** Who fails over (for the record). */
  readonly by: string;
  /** The standby's wall clock, for the record's `at` (now otherwise). */
  readonly wallMs?: number;
  /**
   * false: the container does not run on the standby, so a failover marked earlier did
   * not restore it (its restore failed, or it was killed first): it may be tried again.
   * The mark was set under the lock before that restore; the source stopped for it then.
   */
  readonly runningHere?: boolean;
}

export type FailoverAnswer = { readonly go: LeaseRecord } | { readonly refuse: string; readonly hint: string };

/** Whether failover may restore at NOW (the standby's clock), decided under the lock that renew takes. */
export function failover(rec: LeaseRecord | undefined, now: number, ask: FailoverAsk): FailoverAnswer {
  const mark = (r: LeaseRecord): FailoverAnswer => ({
    go: { ...r, failedOver: { at: ask.wallMs ?? now, by: ask.by } },
  });
  if (!rec) {
    return ask.force || ask.sourceConfirmedStopped
      ? mark({ holder: 'none', expiresAt: now, fence: 'none' })
      : {
          refuse: 'no replication lease here: nothing says the source has stopped',
          hint: 'Give --source HOST to have the source checked (and the container stopped there), or --force.',
        };
  }
  if (rec.failedOver && ask.runningHere === false) return mark(rec);
  if (rec.failedOver)
    return {
      refuse: `already failed over at ${new Date(rec.failedOver.at).toISOString()} by ${rec.failedOver.by}`,
      hint: 'The container was restored here then; look at it with runc state.',
    };
  if (ask.sourceConfirmedStopped || ask.force) return mark(rec);
  if (rec.released) {
    return {
      refuse: `replication by ${rec.holder} ended cleanly: the container still runs on the source`,
      hint: 'Migrate it instead (migrate CONTAINER HOST), or give --source HOST to have it stopped there first.',
    };
  }
  if (rec.expiresAt >= now) {
    return {
      refuse: `the lease of ${rec.holder} is fresh for ${Math.ceil((rec.expiresAt - now) / 1000)} s more: the source may be running`,
      hint: 'Wait for it to expire (failover --watch waits by itself), or give --source HOST to have the source checked.',
    };
  }
  if (rec.fence === 'none') {
    return {
      refuse: `the lease of ${rec.holder} expired, but its source does not fence itself (--fence none): it may still run`,
      hint: 'Give --source HOST to have the source checked (and the container stopped there), or --force.',
    };
  }
  return mark(rec);
}

/**
 * Until when (the source's monotonic clock) the container may run after the standby
 * confirmed a renewal sent at SENTAT: the standby's lease began later than SENTAT, so this
 * ends before it; the margin covers the clocks' rate drift over a lease and the freeze.
 */
export function runsUntil(sentAt: number, leaseMs: number, marginMs: number): number {
  return sentAt + leaseMs - marginMs;
}

/** The margin runsUntil takes: 1 s for the freeze and the scheduling, and 2 % of the lease for the clocks' rates (NTP keeps them within 0.05 %). */
export function leaseMargin(leaseMs: number): number {
  return 1000 + Math.ceil(leaseMs * 0.02);
}

/**
 * The lease on the clock of boot BOOT: one written in an earlier boot of the standby ends
 * its length after this boot began (the source's count, begun before the reboot, has
 * ended by then). One with no recorded length keeps its time as written.
 */
export function rebase(lease: LeaseRecord | undefined, boot: string): LeaseRecord | undefined {
  if (!lease || lease.boot === undefined || lease.boot === boot) return lease;
  return { ...lease, expiresAt: lease.leaseMs ?? lease.expiresAt, boot };
}
