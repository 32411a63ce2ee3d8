// The benchmarks' client: what the application's users see of a migration. Runs outside
// the container (another namespace or VM) and sends one request every INTERVAL ms over one
// TCP connection: a Redis PING, a Redis SET of a random populated key (to dirty memory
// while it measures), or a line to the echo server. The longest time between two answers
// is the downtime the client saw. If the connection breaks it reconnects at once and
// counts it. Runs until SIGTERM, then prints one JSON line.
//   node probe.js watch HOST PORT [--every MS] [--cmd ping|set|echo] [--keys N] [--bind ADDR] [--samples]
// --samples: the JSON line also holds every request as [sent at, ms from start; answered after, ms].
// And one Redis command, its reply on stdout (to fill a Redis where no redis-cli is):
//   node probe.js do HOST PORT ARG...
import net from 'node:net';

const [verb, host, portText, ...rest] = process.argv.slice(2);
const port = Number(portText);
if (!host || !port || (verb !== 'watch' && verb !== 'do')) {
  process.stderr.write(
    'usage: probe.js watch HOST PORT [--every MS] [--cmd ping|set|echo] [--keys N] [--bind ADDR] | probe.js do HOST PORT ARG...\n',
  );
  process.exit(2);
}

const resp = (args: string[]) =>
  `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');

if (verb === 'do') {
  const sock = net.connect({ host, port }, () => sock.write(resp(rest)));
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString();
    const nl = buf.indexOf('\r\n');
    if (nl < 0) return;
    const line = buf.slice(0, nl);
    process.stdout.write(line.replace(/^[+:]/, '') + '\n');
    sock.destroy();
    process.exit(line.startsWith('-') ? 1 : 0);
  });
  sock.on('error', (e) => {
    process.stderr.write(`probe: ${e.message}\n`);
    process.exit(1);
  });
} else {
  const opt = (name: string, dflt: string) => {
    const i = rest.indexOf(`--${name}`);
    return i >= 0 ? rest[i + 1] : dflt;
  };
  const every = Number(opt('every', '10'));
  const cmd = opt('cmd', 'ping');
  const keys = Number(opt('keys', '1000'));
  const bind = opt('bind', '');
  const keepSamples = rest.includes('--samples');
  // Requests in flight, oldest first: on one connection the answers come in order.
  const inFlight: number[] = [];
  const samples: Array<[number, number]> = [];
  const value = 'v'.repeat(100);
  const request = (n: number) =>
    cmd === 'echo'
      ? `${n}\n`
      : cmd === 'set'
        ? resp(['SET', `key:${Math.floor(Math.random() * keys)}`, value])
        : 'PING\r\n';

  const t0 = performance.now();
  let sent = 0;
  let answered = 0;
  let reconnects = 0;
  let errors = 0;
  let lastAnswer = t0;
  let maxGapMs = 0;
  let gapEndsAtMs = 0;
  let sock: net.Socket | undefined;
  let up = false;
  let stopping = false;

  const connect = () => {
    let buf = '';
    const s = net.connect({ host, port, ...(bind ? { localAddress: bind } : {}) }, () => {
      up = true;
      if (answered === 0 && reconnects === 0) {
        lastAnswer = performance.now();
        process.stderr.write('connected\n');
      }
    });
    s.setNoDelay(true);
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('-')) errors++;
        const now = performance.now();
        const sentAt = inFlight.shift();
        if (keepSamples && sentAt !== undefined)
          samples.push([Math.round(sentAt - t0), Math.round((now - sentAt) * 10) / 10]);
        if (now - lastAnswer > maxGapMs) {
          maxGapMs = now - lastAnswer;
          gapEndsAtMs = now - t0;
        }
        lastAnswer = now;
        answered++;
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      up = false;
      inFlight.length = 0;
      if (stopping) return;
      reconnects++;
      setTimeout(() => (sock = connect()), 10);
    });
    return s;
  };
  sock = connect();
  const timer = setInterval(() => {
    if (!up || !sock) return;
    sent++;
    inFlight.push(performance.now());
    sock.write(request(sent));
  }, every);

  const finish = () => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    // The last requests' answers have time to arrive.
    setTimeout(() => {
      process.stdout.write(
        JSON.stringify({
          sent,
          answered,
          reconnects,
          errors,
          maxGapMs: Math.round(maxGapMs),
          gapEndsAtMs: Math.round(gapEndsAtMs),
          ranMs: Math.round(performance.now() - t0),
          ...(keepSamples ? { samples } : {}),
        }) + '\n',
      );
      sock?.destroy();
      process.exit(0);
    }, 500);
  };
  process.on('SIGTERM', finish);
  process.on('SIGINT', finish);
}
