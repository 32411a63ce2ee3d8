// The destination reached over IPv6 (`root@[fd77::2]`): the SSH connection, the page
// server's address (bracketed for runc: `[fd77::2]:27027`), the certificates and the
// port rules (ip6tables) all take the IPv6 address. --move-ip moves IPv4 addresses only.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  hostState,
  migrate,
  readCounter,
  readEnv,
  removeEverywhere,
  setupHosts,
  startExample,
  waitFor,
  whereRunning,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let dst6: string;
before(async () => {
  h = await setupHosts();
  dst6 = readEnv().RM_DST_ADDR6;
});

describe('a destination given by its IPv6 address', () => {
  for (const transport of ['tls', 'auto']) {
    test(`--transport ${transport} to root@[${'fd77::2'}]: the counter goes on there, nothing left`, async () => {
      const name = 'six';
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const r = await migrate([
        name,
        `root@[${dst6}]`,
        '-i',
        h.key,
        '--known-hosts',
        h.knownHosts,
        '--runc-root',
        h.srcRoot,
        '--remote-runc-root',
        h.dstRoot,
        '--bundle',
        b.dst,
        '--transport',
        transport,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const j = JSON.parse(r.stdout);
      assert.equal(j.outcome, 'migrated');
      if (transport === 'tls') assert.equal(j.transport, 'tls');
      const last = await readCounter(b.dst);
      assert.deepEqual(await whereRunning(name, b), ['destination']);
      assert.ok((await readCounter(b.dst)) >= last);
      assert.deepEqual(await hostState(), []);
      await removeEverywhere(h, name);
    });
  }
});
