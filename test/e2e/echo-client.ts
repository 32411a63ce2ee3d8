// A TCP peer of the echo container, run inside the client namespace by the tests and the
// benchmarks. Sends "N\n" every INTERVAL ms over one connection and checks that every
// answer comes back whole and in order. Runs until SIGTERM (or DURATION ms), then prints
// one JSON line: sent, answered, in order, longest gap between answers, errors.
//   node echo-client.js HOST PORT [INTERVAL_MS] [DURATION_MS]
import net from 'node:net';

const [host, portText, intervalText = '20', durationText = '0'] = process.argv.slice(2);
const interval = Number(intervalText);
const duration = Number(durationText);
let sent = 0;
let answered = 0;
let inOrder = true;
let maxGapMs = 0;
let lastAnswer = 0;
let buf = '';
let error: string | undefined;
let closed = false;
let timer: NodeJS.Timeout | undefined;

const sock = net.connect({ host, port: Number(portText) }, () => {
  lastAnswer = performance.now();
  process.stderr.write('connected\n');
  timer = setInterval(() => {
    sent++;
    sock.write(`${sent}\n`);
  }, interval);
});
sock.setNoDelay(true);
sock.on('data', (d) => {
  buf += d.toString();
  let nl: number;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - lastAnswer);
    lastAnswer = now;
    if (line !== String(answered + 1)) inOrder = false;
    answered++;
  }
});
sock.on('error', (e) => (error = e.message));
sock.on('close', () => {
  closed = true;
  finish();
});

let finishing = false;
function finish(): void {
  if (finishing) return;
  finishing = true;
  if (timer) clearInterval(timer);
  // Give the last requests time to come back.
  setTimeout(() => {
    process.stdout.write(
      JSON.stringify({ sent, answered, inOrder, maxGapMs: Math.round(maxGapMs), error, closedByPeer: closed }) + '\n',
    );
    sock.destroy();
    process.exit(0);
  }, 1000);
}
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
if (duration > 0) setTimeout(finish, duration);
