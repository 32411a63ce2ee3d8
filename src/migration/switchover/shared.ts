// What the source and the destination participants share: where the final images go,
// CRIU's evidence in a failure, a connection that comes back, and removing a copy.
import path from 'node:path';
import type { Host } from '../../host.js';
import { runc, type RuncGlobal } from '../../runc.js';
import { SshConnection } from '../../ssh/connection.js';
import type { Session } from '../session.js';
import { diagnose } from './diagnose.js';

/** Where the final dump's files go on each side. */
export interface FinalImages {
  local: string;
  remote: string;
  /** The last pre-dump, relative to these directories ("../3"), when pre-copy ran. */
  parent?: string;
}

/** A failure that carries CRIU's own evidence (the first Error lines of its log, a known cause). */
export class CriuFailure extends Error {
  constructor(
    message: string,
    readonly criu: ReturnType<typeof diagnose>,
  ) {
    super(message);
  }
}

export async function fetchLog(host: Host, file: string): Promise<string> {
  const r = await host.run(['cat', file], { allowFail: true });
  return r.code === 0 ? r.stdout : '';
}

/** A new SSH connection when the old one dropped; false if the destination stays unreachable. */
export async function reconnect(ctx: Pick<Session, 'ssh' | 'dst' | 'progress'>): Promise<boolean> {
  if (ctx.ssh.alive) return true;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const ssh = await SshConnection.connect(ctx.ssh.endpoint);
      ctx.ssh = ssh;
      ctx.dst.useConnection(ssh);
      ctx.progress.warn(`the SSH connection dropped; reconnected (attempt ${attempt})`);
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  return false;
}

/** The guard's directory in the destination's work directory BASE. */
export function guardDirOf(base: string): string {
  return path.join(base, 'guard');
}

/** Kills a container and deletes it (a copy that must not run); nothing when it is gone. Shared with migrate recover. */
export async function removeContainer(host: Host, g: RuncGlobal, name: string): Promise<void> {
  await host.run(runc.killHard(g, name), { allowFail: true });
  await host.run(runc.deleteForce(g, name), { allowFail: true });
}
