// replicate --trigger-socket PATH: a unix datagram socket the container can write to (its
// directory bind-mounted into it; examples/make-bundle.sh TRIGGER_DIR). A datagram, not
// a stream: the container's end is a socket CRIU never has to dump connected to one
// outside its namespaces. Node has no unix datagram sockets: a small perl program (perl
// is already the change log's) binds it, owner-only, and prints each datagram as a line;
// it ends with the tool (its stdout closes) or when the tool's pid is gone, and removes
// the socket.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export type TriggerWord = 'CHECKPOINT' | 'MIGRATE';

/** The listener (perl): $ARGV[0] the socket's path, $ARGV[1] the tool's pid. Prints "ready", then one line per datagram. */
export const TRIGGER_SCRIPT = `use strict;
use warnings;
use Socket;
my ($path, $tool) = @ARGV;
unlink $path;
socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!\\n";
my $old = umask(0077);
bind($s, pack_sockaddr_un($path)) or die "bind $path: $!\\n";
umask($old);
$| = 1;
$SIG{PIPE} = sub { unlink $path; exit 0 };
print "ready\\n";
while (1) {
  my $rin = '';
  vec($rin, fileno($s), 1) = 1;
  if (select(my $rout = $rin, undef, undef, 1) > 0) {
    my $buf = '';
    defined(recv($s, $buf, 256, 0)) or next;
    $buf =~ s/[^\\x20-\\x7e]//g;
    print substr($buf, 0, 64), "\\n";
  }
  kill(0, $tool) or last;
}
unlink $path;
`;

/** What a datagram asks for: a known word (surrounding blanks and a line end allowed), or nothing. */
export function triggerWord(line: string): TriggerWord | undefined {
  const w = line.trim().toUpperCase();
  return w === 'CHECKPOINT' || w === 'MIGRATE' ? w : undefined;
}

export class TriggerSocket {
  private constructor(private readonly child: ChildProcess) {}

  /** Binds PATH; ON gets each datagram's text. Resolves once the socket is there. */
  static async listen(path: string, on: (text: string) => void): Promise<TriggerSocket> {
    // Its own process group: a Ctrl-C to the tool's is the tool's to handle, and the
    // tool closes the socket as it stops.
    const child = spawn('perl', ['-e', TRIGGER_SCRIPT, path, String(process.pid)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    await new Promise<void>((resolve, reject) => {
      let ready = false;
      lines.on('line', (l) => {
        if (!ready && l === 'ready') {
          ready = true;
          resolve();
        } else if (ready) on(l);
      });
      child.once('exit', (code) => {
        if (!ready) reject(new Error(`--trigger-socket ${path}: ${err.trim() || `the listener exited ${code}`}`));
      });
      child.once('error', reject);
    });
    return new TriggerSocket(child);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const ended = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGPIPE');
    await Promise.race([ended, new Promise((r) => setTimeout(r, 2000))]);
  }
}
