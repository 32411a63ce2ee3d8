// migrate(1), generated from the command line's own definition (cli.ts): the flags,
// their descriptions and defaults are the ones --help prints, so the two cannot drift.
// `migrate man` prints it; the package installs it (package.json "man").
import type { Command, Option } from 'commander';
import os from 'node:os';

/** Text for roff: backslashes doubled, a leading dot or quote kept from being a request, dashes literal. */
function esc(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

/** The default as --help shows it, if any. */
function defaultOf(o: Option): string | undefined {
  if (o.defaultValueDescription !== undefined) return o.defaultValueDescription;
  if (o.defaultValue === undefined || o.defaultValue === false || o.negate) return undefined;
  return Array.isArray(o.defaultValue) ? o.defaultValue.join(', ') : String(o.defaultValue);
}

function optionItems(options: readonly Option[]): string[] {
  const out: string[] = [];
  for (const o of options) {
    if (o.hidden) continue;
    const [names, arg] = [o.flags.replace(/\s*[<[].*$/, ''), o.flags.match(/[<[].*$/)?.[0]];
    const shown = arg?.replace(/^<(.*)>$/, '$1');
    const head = `\\fB${esc(names)}\\fR${shown ? ` \\fI${esc(shown)}\\fR` : ''}`;
    const d = defaultOf(o);
    const choices = o.argChoices ? ` One of: ${o.argChoices.join(', ')}.` : '';
    out.push('.TP', head, esc(`${o.description}${choices}${d !== undefined ? ` (default: ${d})` : ''}`));
  }
  return out;
}

/** The text after "Exit codes:" and "Examples:" in a command's help, as roff paragraphs. */
function helpAfter(text: string, heading: string): string[] {
  const i = text.indexOf(`${heading}:`);
  if (i < 0) return [];
  const block = text.slice(i + heading.length + 1).split(/\n\n|\n[A-Z][a-z ]+:\n/)[0];
  return ['.nf', esc(block.replace(/^\n+|\n+$/g, '').replace(/^ {2}/gm, '')), '.fi'];
}

export function manPage(program: Command, version: string, afterHelp: string): string {
  const lines = [
    `.TH MIGRATE 1 "" "runc-migrate ${esc(version)}" "User Commands"`,
    '.SH NAME',
    `migrate \\- ${esc(program.description())}`,
    '.SH SYNOPSIS',
    '.B migrate',
    '[\\fIoptions\\fR] \\fIcontainer\\fR \\fIhost\\fR',
  ];
  for (const c of program.commands) {
    if (c.name() === 'help') continue;
    const args = c.registeredArguments.map((a) => `\\fI${esc(a.name())}\\fR`).join(' ');
    lines.push('.br', `.B migrate ${esc(c.name())}`, `[\\fIoptions\\fR] ${args}`);
  }
  lines.push(
    '.SH DESCRIPTION',
    esc(
      'migrate moves a running runc container from this machine to HOST with CRIU: its memory, open files and established TCP connections. The destination needs runc, criu and an SSH server; one SSH connection carries every remote command. Every check runs before anything is frozen, and the container ends on exactly one host.',
    ),
    '.PP',
    esc('HOST is [user@]host[:port], ssh://[user@]host[:port], or a Host alias from ~/.ssh/config.'),
    '.SH OPTIONS',
    ...optionItems(program.options),
    '.SH COMMANDS',
  );
  for (const c of program.commands) {
    if (c.name() === 'help') continue;
    lines.push('.SS', `migrate ${esc(c.name())}`, esc(c.description()));
    // recover shares the migration's flags: only its own (visible) ones are listed.
    const own = c.options.filter((o) => !program.options.includes(o));
    if (own.length) lines.push(...optionItems(own));
    const shared = c.options.filter((o) => program.options.includes(o) && !o.hidden).map((o) => o.long);
    if (shared.length) lines.push('.PP', esc(`Also: ${shared.join(', ')}, as above.`));
  }
  lines.push('.SH "EXIT STATUS"', ...helpAfter(afterHelp, 'Exit codes'));
  lines.push('.SH EXAMPLES', ...helpAfter(afterHelp, 'Examples'));
  lines.push('.SH "SEE ALSO"', '\\fBrunc\\fR(8), \\fBcriu\\fR(8), \\fBssh_config\\fR(5)');
  // The defaults under the home directory of whoever made the page (a package is made on
  // one machine and read on others) are written as ~.
  const home = os.homedir();
  const text = `${lines.join('\n')}\n`;
  return home && home !== '/' ? text.split(esc(home)).join('~') : text;
}
