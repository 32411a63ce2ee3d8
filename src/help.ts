// migrate --help, grouped: the flags by what they are about, each in a line or two. The
// full descriptions stay on the options themselves, for the man page (manpage.ts); here a
// shorter one is shown where there is one. A flag in no group is listed under "Other",
// so a new flag is never missing from the help.
import type { Command, Help, Option } from 'commander';

/** The groups, in order, and their flags (--long names). */
export const HELP_GROUPS: ReadonlyArray<readonly [string, readonly string[]]> = [
  [
    'Connection',
    ['--identity', '--known-hosts', '--accept-new-host-key', '--ssh-config', '--connect-timeout', '--sudo'],
  ],
  [
    'runc and CRIU',
    [
      '--runc-root',
      '--remote-runc-root',
      '--runc',
      '--remote-runc',
      '--criu',
      '--remote-criu',
      '--bundle',
      '--diskless',
      '--no-diskless',
      '--work-dir',
      '--remote-work-dir',
    ],
  ],
  [
    'Memory method',
    [
      '--iterative',
      '--one-shot',
      '--max-downtime',
      '--threshold',
      '--max-iterations',
      '--auto-converge',
      '--pre-dump-mode',
      '--post-copy',
      '--hybrid',
      '--post-copy-shared-ok',
      '--tune-sysctl',
      '--transport',
      '--page-server-port',
    ],
  ],
  ['Network', ['--tcp-established', '--no-tcp-established', '--move-ip']],
  ['Files', ['--sync-rootfs', '--no-sync-rootfs', '--sync-volume', '--verify-files', '--replica-dir']],
  ['Safety', ['--dry-run', '--force', '--hold-timeout']],
  ['Output', ['--json', '--no-color', '--quiet', '--verbose', '--version', '--help']],
];

/** The help's words for flags whose full description (the man page's) runs long. */
export const SHORT_HELP: Readonly<Record<string, string>> = {
  '--identity': 'SSH private key, repeatable (default: ssh-agent, then ssh_config, then ~/.ssh/id_*)',
  '--known-hosts': "the known_hosts file for the destination's key (default: ssh_config's, else ~/.ssh/known_hosts)",
  '--accept-new-host-key': 'record the key of a host not known at all (StrictHostKeyChecking=accept-new)',
  '--bundle': "the bundle's path on the destination (default: the source's)",
  '--work-dir': "the parent of the source's work directory (default: /dev/shm; /var/tmp with --no-diskless)",
  '--transport': 'how pages travel: auto, tls, tunnel, stream or direct',
  '--iterative': 'pre-copy while it runs, then freeze (the default where the kernel tracks dirty memory)',
  '--threshold': 'stop rule instead: an iteration writes less than SIZE (16M) or PCT of the first (10%)',
  '--auto-converge': "throttle the container's CPU while pre-copy does not converge",
  '--pre-dump-mode': 'how pre-dumps read memory: splice (frozen) or read (after)',
  '--post-copy': 'restore at once and move the memory after (needs both hosts until the last page)',
  '--hybrid': 'pre-copy, then post-copy for what is left',
  '--post-copy-shared-ok': 'post-copy with storage both hosts share (a broken window loses what the copy wrote)',
  '--tune-sysctl': 'post-copy: raise fs.pipe-max-size where too low, and put it back after',
  '--move-ip': 'move this service IPv4 address with the container (announced by ARP)',
  '--sync-rootfs': 'sync the root filesystem: while it runs, then what changed, in the freeze (default)',
  '--no-sync-rootfs': 'do not sync it (shared storage, or a copy kept identical)',
  '--verify-files': 'compare the synced trees in the freeze; a difference rolls back',
  '--replica-dir': "replicate's replicas on its standby: a migration there starts from this container's",
  '--hold-timeout': 'how long the frozen source waits for the verdict (default: 60 s, more when large)',
  '--force': 'skip the preflight checks that can be skipped (it says which)',
  '--dry-run': 'check both hosts and print the plan; freeze and change nothing',
  '--page-server-port': "the page server's TCP port (on the destination; the source's with --post-copy)",
  '--no-tcp-established': 'do not migrate TCP connections (the dump fails if there are any)',
};

/** A copy of option O (one command's help may show it otherwise than another's), with CHANGES. */
export function cloneOption(o: Option, changes: Partial<Option> = {}): Option {
  return Object.assign(Object.create(Object.getPrototypeOf(o)), o, changes) as Option;
}

/** The flag as the help shows it: the short description when there is one, its default as --help would. */
function shown(o: Option): Option {
  const short = o.long ? SHORT_HELP[o.long] : undefined;
  // The short words name the choices themselves.
  return short ? cloneOption(o, { description: short, argChoices: undefined }) : o;
}

/** commander's help, with the options in HELP_GROUPS' groups. */
export function groupedHelp(cmd: Command, helper: Help): string {
  // The terms' column as wide as the widest option or argument (a command is shown by its
  // name and arguments only, which are shorter): the descriptions keep room to wrap.
  const commandTerm = (c: Command) => [c.name(), ...c.registeredArguments.map((a) => helper.argumentTerm(a))].join(' ');
  const termWidth = Math.max(
    ...helper.visibleOptions(cmd).map((o) => helper.optionTerm(o).length),
    ...helper.visibleArguments(cmd).map((a) => helper.argumentTerm(a).length),
    ...helper.visibleCommands(cmd).map((c) => commandTerm(c).length),
  );
  const helpWidth = helper.helpWidth || 80;
  const item = (term: string, description: string) =>
    description ? helper.wrap(`${term.padEnd(termWidth + 2)}${description}`, helpWidth - 2, termWidth + 2) : term;
  const list = (items: string[]) => items.join('\n').replace(/^/gm, '  ');
  const out = [`Usage: ${helper.commandUsage(cmd)}`, ''];
  const description = helper.commandDescription(cmd);
  if (description) out.push(helper.wrap(description, helpWidth, 0), '');
  const args = helper.visibleArguments(cmd).map((a) => item(helper.argumentTerm(a), helper.argumentDescription(a)));
  if (args.length) out.push('Arguments:', list(args), '');
  const options = helper.visibleOptions(cmd);
  const placed = new Set<Option>();
  const groups: Array<[string, Option[]]> = HELP_GROUPS.map(([name, flags]) => {
    const members = options.filter((o) => o.long && flags.includes(o.long));
    for (const o of members) placed.add(o);
    return [name, members];
  });
  groups.push(['Other', options.filter((o) => !placed.has(o))]);
  for (const [name, members] of groups)
    if (members.length)
      out.push(
        `${name}:`,
        list(members.map((o) => item(helper.optionTerm(o), helper.optionDescription(shown(o))))),
        '',
      );
  const commands = helper.visibleCommands(cmd).map((c) => item(commandTerm(c), helper.subcommandDescription(c)));
  if (commands.length) out.push('Commands:', list(commands), '');
  return out.join('\n');
}
