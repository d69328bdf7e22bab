// The manuals show only commands this version accepts: every `sepal-hub …` and `sepal-agent …`
// invocation in a shell block of docs/*.md (info string sh, bash, shell, zsh, or console with `$ `
// prompts; `sh runnable` included) is checked against the usage text the CLIs print for --help.
// Most of these blocks cannot run here (systemd, apt, Keycloak), but their command words and
// --flags can be checked without running them.
//
// What counts as an invocation: `sepal-hub`/`sepal-agent` (or a path ending in one) in command
// position, also after `sudo …`, `runuser -u USER --`, `npx`, `env`, VAR=value, inside `$( … )`,
// and a shell function that wraps one with "$@" (docs/operations.md's `hub`, which means
// `sepal-hub … --data-dir "$D"`): a call of the function is checked as the wrapped command with the
// function's extra arguments appended. Backslash-continued lines are joined; an invocation stops
// at |, ;, &&, ||, &, a redirection, a comment, the ) of a $( … ) or the end of the line. In a
// synopsis (`[--proto udp|tcp]`, `(--node ID | --org ORG)`) the | is an alternative, not a pipe,
// and a next line that starts with `--` or `[--` (which no shell command does) continues it.
//
// Only the command words and the flags are checked: placeholders (NODE_ID, …, <…>) and other
// arguments are not. `--flag=value` counts as --flag; -h, --help and --version are always allowed.
// A command's allowed flags are those on its usage line(s) plus the ones the help text says every
// command takes ("Every command also takes --config FILE and --db FILE").
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
const DOCS = path.join(REPO, 'docs');

type Cli = 'sepal-hub' | 'sepal-agent';
const MAINS: Record<Cli, string> = { 'sepal-hub': 'hub/cli/main.ts', 'sepal-agent': 'agent/cli/main.ts' };
const ALWAYS = new Set(['-h', '--help', '--version']);

// ---------------------------------------------------------------------------------------------
// The CLIs' usage text -> { command words -> allowed flags }

interface Spec {
  cli: Cli;
  /** "node list" -> its flags; "" is the line without command words (`sepal-agent --help | --version`). */
  commands: Map<string, Set<string>>;
  /** Flags the help text says every command takes. */
  global: Set<string>;
}

const FLAG_IN_USAGE = /--[a-z0-9][a-z0-9-]*/g;

function parseUsage(cli: Cli, help: string): Spec {
  const lines = help.split('\n');
  const start = lines.findIndex((l) => l.trim() === 'Usage:');
  if (start < 0) throw new Error(`${cli} --help has no "Usage:" section`);
  const entries: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.trim() === '') break;
    if (l.trim().startsWith(`${cli} `) || l.trim() === cli) entries.push(l.trim());
    else if (entries.length > 0) entries[entries.length - 1] += ` ${l.trim()}`;
  }
  const commands = new Map<string, Set<string>>();
  for (const e of entries) {
    const words: string[] = [];
    for (const w of e.split(/\s+/).slice(1)) {
      if (!/^[a-z][a-z0-9-]*$/.test(w)) break;
      words.push(w);
    }
    const key = words.join(' ');
    const flags = commands.get(key) ?? new Set<string>();
    for (const f of e.match(FLAG_IN_USAGE) ?? []) flags.add(f);
    commands.set(key, flags);
  }
  const global = new Set<string>();
  for (const m of help.matchAll(/^Every command also takes (.*)$/gm)) {
    for (const f of (m[1] ?? '').match(FLAG_IN_USAGE) ?? []) global.add(f);
  }
  return { cli, commands, global };
}

function loadSpec(cli: Cli): Spec {
  const help = execFileSync(process.execPath, [path.join(REPO, MAINS[cli]), '--help'], { cwd: REPO, encoding: 'utf8', timeout: 20_000 });
  return parseUsage(cli, help);
}

// ---------------------------------------------------------------------------------------------
// Markdown -> shell blocks

interface Block {
  line: number; // 1-based line of the first body line
  info: string;
  body: string;
}

const SHELL_INFO = new Set(['sh', 'bash', 'shell', 'zsh']);
const CONSOLE_INFO = new Set(['console', 'shell-session']);

function shellBlocks(md: string): Block[] {
  const out: Block[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})(.*)$/.exec(lines[i] ?? '');
    if (!open) continue;
    const indent = (open[1] ?? '').length;
    const fence = open[2] ?? '```';
    const info = (open[3] ?? '').trim();
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const l = lines[j] ?? '';
      const close = /^\s*(`{3,}|~{3,})\s*$/.exec(l);
      if (close && (close[1] ?? '')[0] === fence[0] && (close[1] ?? '').length >= fence.length) break;
      body.push(l.slice(Math.min(indent, l.length - l.trimStart().length)));
    }
    const lang = (info.split(/[\s{,]/)[0] ?? '').toLowerCase();
    if (SHELL_INFO.has(lang)) out.push({ line: i + 2, info, body: body.join('\n') });
    else if (CONSOLE_INFO.has(lang)) out.push({ line: i + 2, info, body: promptLines(body).join('\n') });
    i = j;
  }
  return out;
}

/** A console transcript: the `$ ` lines (and their backslash continuations); output lines blanked,
 *  so line numbers stay right. */
function promptLines(body: string[]): string[] {
  let continued = false;
  return body.map((l) => {
    const prompt = /^\s*\$ (.*)$/.exec(l);
    const keep = prompt ? (prompt[1] ?? '') : continued ? l : '';
    continued = (prompt !== null || continued) && /\\$/.test(l);
    return keep;
  });
}

// ---------------------------------------------------------------------------------------------
// A small shell lexer: words (quotes removed; `raw` keeps them) and operators, with line numbers.

// `glued`: a word that goes on right after a `)` (`$(mktemp -d)/hub`), a `$(` right after a word's
// start (`D=$(…)`): parts of one shell word, which the lexer splits at the substitution.
type Tok =
  | { kind: 'word'; text: string; raw: string; line: number; glued: boolean }
  | { kind: 'op'; op: string; line: number; glued: boolean };

const OPERATORS = ['&&', '||', ';;', '<<<', '>>', '>&', '&>', '>', '<', '|', '&', ';', '(', '`'];

function lex(src: string, firstLine: number): Tok[] {
  const toks: Tok[] = [];
  let line = firstLine;
  let text = '';
  let raw = '';
  let wordLine = line;
  let inWord = false;
  let glued = false;
  let gluedNext = false;
  let dq = false;
  const resumeDq: boolean[] = []; // per open `(`/`$(`: was it opened inside "…"?
  const heredocs: Array<{ delim: string; strip: boolean }> = [];
  const flush = (): void => {
    if (inWord) toks.push({ kind: 'word', text, raw, line: wordLine, glued });
    text = '';
    raw = '';
    inWord = false;
  };
  const begin = (): void => {
    if (!inWord) {
      inWord = true;
      wordLine = line;
      glued = gluedNext;
    }
    gluedNext = false;
  };
  const op = (o: string): void => {
    const afterWord = inWord;
    flush();
    toks.push({ kind: 'op', op: o, line, glued: afterWord });
    gluedNext = false;
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i] ?? '';
    const n = src[i + 1] ?? '';
    if (dq) {
      if (c === '"') {
        dq = false;
        raw += c;
        i++;
      } else if (c === '\\' && n === '\n') {
        line++;
        i += 2;
      } else if (c === '\\') {
        text += n;
        raw += c + n;
        i += 2;
      } else if (c === '$' && n === '(') {
        op('$(');
        resumeDq.push(true);
        dq = false;
        i += 2;
      } else {
        if (c === '\n') line++;
        text += c;
        raw += c;
        i++;
      }
      continue;
    }
    if (c === '\\' && n === '\n') {
      line++;
      i += 2;
      continue;
    }
    if (c === '\\') {
      begin();
      text += n;
      raw += c + n;
      i += 2;
      continue;
    }
    if (c === "'") {
      begin();
      const end = src.indexOf("'", i + 1);
      const stop = end < 0 ? src.length : end;
      const s = src.slice(i + 1, stop);
      text += s;
      raw += src.slice(i, stop + 1);
      line += s.split('\n').length - 1;
      i = stop + 1;
      continue;
    }
    if (c === '"') {
      begin();
      dq = true;
      raw += c;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      flush();
      gluedNext = false;
      i++;
      continue;
    }
    if (c === '\n') {
      op('NL');
      line++;
      i++;
      // Here-document bodies are data, not commands.
      for (const h of heredocs) {
        while (i < src.length) {
          const e = src.indexOf('\n', i);
          const l = src.slice(i, e < 0 ? src.length : e);
          i = e < 0 ? src.length : e + 1;
          line++;
          if ((h.strip ? l.replace(/^\t+/, '') : l) === h.delim) break;
        }
      }
      heredocs.length = 0;
      continue;
    }
    if (c === '#' && !inWord) {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (c === '$' && n === '(') {
      op('$(');
      resumeDq.push(false);
      i += 2;
      continue;
    }
    if (c === ')') {
      op(')');
      gluedNext = true;
      i++;
      if (resumeDq.pop() === true) {
        dq = true;
        begin();
      }
      continue;
    }
    if (src.startsWith('<<', i) && !src.startsWith('<<<', i)) {
      flush();
      const strip = src[i + 2] === '-';
      i += strip ? 3 : 2;
      while (src[i] === ' ' || src[i] === '\t') i++;
      let delim = '';
      while (i < src.length && !/[\s;&|<>()]/.test(src[i] ?? ' ')) {
        if (!`"'\\`.includes(src[i] ?? '')) delim += src[i];
        i++;
      }
      heredocs.push({ delim, strip });
      toks.push({ kind: 'op', op: '<<', line, glued: false });
      continue;
    }
    const o = OPERATORS.find((x) => src.startsWith(x, i));
    if (o !== undefined) {
      op(o);
      if (o === '(') resumeDq.push(false);
      i += o.length;
      continue;
    }
    begin();
    text += c;
    raw += c;
    i++;
  }
  flush();
  return toks;
}

// ---------------------------------------------------------------------------------------------
// Tokens -> invocations

interface Arg {
  text: string;
  raw: string;
  line: number;
}

interface Invocation {
  line: number;
  cli: Cli;
  /** What the doc typed: sepal-hub, npx's sepal-agent, or a wrapper function's name. */
  via: string;
  args: Arg[];
  /** `sepal-hub "$@" …` inside a wrapper function: its extra flags must suit every command. */
  wrapper: boolean;
}

interface Wrapper {
  cli: Cli;
  extra: Arg[];
}

const SEPARATORS = new Set(['NL', ';', ';;', '&', '&&', '||', '|', '$(', '(', ')', '`']);
const REDIRECTS = new Set(['>', '>>', '>&', '&>', '<', '<<<']);
const TRANSPARENT = new Set(['then', 'do', 'else', 'elif', 'if', 'while', 'until', '!', 'time', '{', 'exec', 'nohup', 'command', 'builtin']);
/** Prefix commands and their options that take a value. */
const PREFIXES: Record<string, Set<string>> = {
  sudo: new Set(['-u', '-g', '-C', '-D', '-h', '-p', '-r', '-t', '-T', '-U', '--user', '--group']),
  runuser: new Set(['-u', '-g', '-G', '-s', '-w', '--user', '--group', '--supp-group', '--shell']),
  npx: new Set(['-p', '--package']),
  env: new Set(['-u', '-C', '-S', '--unset', '--chdir']),
};

function cliOf(word: string): Cli | undefined {
  const m = /^(?:.*[/\\])?(sepal-hub|sepal-agent)(?:\.exe)?$/.exec(word);
  return m ? (m[1] as Cli) : undefined;
}

const isFlag = (s: string): boolean => /^--[^-=]/.test(s) || /^-[A-Za-z]/.test(s);

/** The arguments of an invocation starting at toks[j]. */
function collectArgs(toks: Tok[], j: number): Arg[] {
  const args: Arg[] = [];
  let group = 0; // synopsis ( … | … )
  let bracket = 0; // synopsis [ … ]
  for (; j < toks.length; j++) {
    const t = toks[j];
    if (t === undefined) break;
    if (t.kind === 'op') {
      if (t.op === '$(' || t.op === '`') {
        // A substitution inside an argument (`--db hub-$(date +%F).db`) is part of a value.
        let depth = 1;
        for (j++; j < toks.length && depth > 0; j++) {
          const u = toks[j];
          if (u?.kind !== 'op') continue;
          if (t.op === '`') depth = u.op === '`' ? 0 : depth;
          else if (u.op === '$(' || u.op === '(') depth++;
          else if (u.op === ')') depth--;
        }
        j--;
        continue;
      }
      if (t.op === '(') {
        group++;
        continue;
      }
      if (t.op === ')' && group > 0) {
        group--;
        continue;
      }
      if (t.op === '|' && (group > 0 || bracket > 0)) continue;
      if (t.op === 'NL') {
        // A synopsis continued on the next line, which starts with a flag.
        const next = toks[j + 1];
        if (next?.kind === 'word' && /^\[*-/.test(next.raw)) continue;
      }
      break;
    }
    let text = t.text;
    if (!/["']/.test(t.raw)) {
      bracket = Math.max(0, bracket + (t.raw.match(/\[/g)?.length ?? 0) - (t.raw.match(/\]/g)?.length ?? 0));
      text = text.replace(/^\[+/, '').replace(/\]+$/, '');
    }
    if (text !== '') args.push({ text, raw: t.raw, line: t.line });
  }
  return args;
}

/** Every invocation in one file's shell blocks (wrapper functions carry over from block to block). */
function invocationsIn(md: string): { invocations: Invocation[]; wrappers: Map<string, Wrapper> } {
  const invocations: Invocation[] = [];
  const wrappers = new Map<string, Wrapper>();
  for (const block of shellBlocks(md)) {
    const toks = lex(block.body, block.line);
    let cmdPos = true;
    const outer: boolean[] = []; // cmdPos to go back to at the `)` of a `$(`/`(`
    let fn: string | undefined;
    for (let i = 0; i < toks.length; i++) {
      const t = toks[i];
      if (t === undefined) break;
      if (t.kind === 'op') {
        if (REDIRECTS.has(t.op)) {
          if (toks[i + 1]?.kind === 'word') i++;
        } else if (t.op === '$(' || t.op === '(') {
          // After `D=$(…)` a command may still follow; after `x$(…)` or a word made of one, not.
          outer.push(t.op === '(' || (t.glued && cmdPos));
          cmdPos = true;
        } else if (t.op === ')') {
          cmdPos = outer.pop() ?? true;
        } else if (SEPARATORS.has(t.op)) {
          cmdPos = true;
        }
        continue;
      }
      if (!cmdPos || t.glued) continue;
      const a = toks[i + 1];
      const b = toks[i + 2];
      if (a?.kind === 'op' && a.op === '(' && b?.kind === 'op' && b.op === ')' && /^[A-Za-z_][\w-]*$/.test(t.raw)) {
        fn = t.raw; // NAME() { … }
        i += 2;
        continue;
      }
      if (TRANSPARENT.has(t.raw) || /^[A-Za-z_]\w*=/.test(t.raw)) continue;
      const valued = PREFIXES[t.raw];
      if (valued !== undefined) {
        let j = i + 1;
        for (;;) {
          const u = toks[j];
          if (u?.kind !== 'word') break;
          if (u.raw === '--') {
            j++;
            break;
          }
          if (u.raw.startsWith('-')) j += valued.has(u.raw) ? 2 : 1;
          else if (t.raw === 'env' && /^[A-Za-z_]\w*=/.test(u.raw)) j++;
          else break;
        }
        i = j - 1;
        continue;
      }
      cmdPos = false;
      const cli = cliOf(t.text);
      const wrapper = wrappers.get(t.raw);
      if (cli !== undefined) {
        const args = collectArgs(toks, i + 1);
        const first = args[0];
        if (first !== undefined && /^"?\$[@*]"?$/.test(first.raw)) {
          const extra = args.slice(1);
          if (fn !== undefined) wrappers.set(fn, { cli, extra });
          invocations.push({ line: t.line, cli, via: t.text, args: extra, wrapper: true });
        } else {
          invocations.push({ line: t.line, cli, via: t.text, args, wrapper: false });
        }
      } else if (wrapper !== undefined) {
        invocations.push({ line: t.line, cli: wrapper.cli, via: t.raw, args: [...collectArgs(toks, i + 1), ...wrapper.extra], wrapper: false });
      }
    }
  }
  return { invocations, wrappers };
}

// ---------------------------------------------------------------------------------------------
// Invocations -> problems

function checkInvocation(file: string, inv: Invocation, spec: Spec): string[] {
  const where = (line: number): string => `docs/${file}:${line}`;
  const flagName = (a: Arg): string => a.text.split('=')[0] ?? a.text;
  const allowedFor = (key: string): Set<string> => new Set([...(spec.commands.get(key) ?? []), ...spec.global, ...ALWAYS]);
  const problems: string[] = [];
  if (inv.wrapper) {
    // `sepal-hub "$@" --data-dir "$D"`: the appended flags must suit every command.
    const keys = [...spec.commands.keys()].filter((k) => k !== '');
    for (const a of inv.args.filter((x) => isFlag(x.text))) {
      const f = flagName(a);
      const refusing = keys.filter((k) => !allowedFor(k).has(f));
      if (refusing.length > 0) problems.push(`${where(a.line)}: ${inv.cli} "$@" ${f}: unknown flag (for ${refusing.join(', ')})`);
    }
    return problems;
  }
  const words: string[] = [];
  for (const a of inv.args) {
    if (isFlag(a.text)) break;
    words.push(a.text);
  }
  let key: string | undefined;
  for (let n = Math.min(words.length, 3); n >= 1 && key === undefined; n--) {
    const k = words.slice(0, n).join(' ');
    if (spec.commands.has(k)) key = k;
  }
  if (key === undefined && words.length === 0) {
    const first = inv.args[0];
    if (first === undefined) return [`${where(inv.line)}: ${inv.cli}: missing command`];
    // Only --help/--version (and a command-less usage line) work without a command.
    const bad = inv.args.filter((a) => isFlag(a.text) && !allowedFor('').has(flagName(a)));
    return bad.length === 0 ? [] : [`${where(inv.line)}: ${inv.cli} ${flagName(first)}: unknown command`];
  }
  if (key === undefined) {
    const groups = new Set([...spec.commands.keys()].filter((k) => k.includes(' ')).map((k) => k.split(' ')[0]));
    const shown = words.slice(0, groups.has(words[0]) ? 2 : 1).join(' ');
    return [`${where(inv.line)}: ${inv.cli} ${shown}: unknown command`];
  }
  const allowed = allowedFor(key);
  for (const a of inv.args) {
    if (!isFlag(a.text)) continue;
    const f = flagName(a);
    if (!allowed.has(f)) problems.push(`${where(a.line)}: ${inv.cli} ${key} ${f}: unknown flag`);
  }
  return problems;
}

function checkDoc(file: string, md: string, specs: Record<Cli, Spec>): { invocations: Invocation[]; problems: string[] } {
  const { invocations } = invocationsIn(md);
  return { invocations, problems: invocations.flatMap((inv) => checkInvocation(file, inv, specs[inv.cli])) };
}

// ---------------------------------------------------------------------------------------------

const SPECS: Record<Cli, Spec> = { 'sepal-hub': loadSpec('sepal-hub'), 'sepal-agent': loadSpec('sepal-agent') };

const DOC_FILES = fs.readdirSync(DOCS).filter((f) => f.endsWith('.md')).sort();
const RESULTS = DOC_FILES.map((file) => ({ file, ...checkDoc(file, fs.readFileSync(path.join(DOCS, file), 'utf8'), SPECS) }));

describe('CLI usage text', () => {
  it('parses into commands and their flags', () => {
    const hub = SPECS['sepal-hub'];
    const agent = SPECS['sepal-agent'];
    expect(hub.commands.size).toBeGreaterThanOrEqual(15);
    expect([...hub.commands.keys()]).toEqual(expect.arrayContaining(['init', 'serve', 'node list', 'ca prepare-root', 'vpn server-config']));
    expect([...(hub.commands.get('token create') ?? [])]).toEqual(expect.arrayContaining(['--data-dir', '--org', '--ttl', '--uses']));
    expect([...hub.global]).toEqual(expect.arrayContaining(['--config', '--db']));
    expect([...agent.commands.keys()]).toEqual(expect.arrayContaining(['enroll', 'run', 'status', 'doctor']));
    expect([...(agent.commands.get('enroll') ?? [])]).toEqual(expect.arrayContaining(['--hub', '--ca-sha256', '--token', '--state-dir']));
  });
});

describe('sepal-hub and sepal-agent commands in docs/*.md', () => {
  it('finds enough invocations that an extraction bug cannot pass unnoticed', () => {
    const all = RESULTS.flatMap((r) => r.invocations);
    expect(all.length).toBeGreaterThan(30);
    expect(all.filter((i) => i.cli === 'sepal-hub').length).toBeGreaterThan(20);
    expect(all.filter((i) => i.cli === 'sepal-agent').length).toBeGreaterThan(10);
    // operations.md's `hub` function: `hub node list` is `sepal-hub node list --data-dir "$D"`.
    const ops = invocationsIn(fs.readFileSync(path.join(DOCS, 'operations.md'), 'utf8'));
    expect(ops.wrappers.get('hub')?.cli).toBe('sepal-hub');
    expect(ops.invocations.filter((i) => i.via === 'hub').length).toBeGreaterThan(10);
  });

  it('uses only commands and flags the CLIs accept', () => {
    expect(RESULTS.flatMap((r) => r.problems), 'commands the CLIs do not accept (docs/FILE:LINE)').toEqual([]);
  });

  it('reports a wrong command or flag (self-test on a made-up doc)', () => {
    const md = [
      '# made up', // 1
      '', // 2
      '```sh', // 3
      'sepal-hub node list --data-dir /x --frobnicate', // 4
      'systemctl start sepal-hub   # sepal-hub --not-an-invocation', // 5
      'runuser -u sepal-agent -- sepal-agent enroll --hub https://h:8444 \\', // 6
      '  --ca-sha256 HEX --tokn=abc | tee log', // 7
      'hub() { runuser -u sepal-hub -- sepal-hub "$@" --data-dir "$D"; }', // 8
      'hub node lisst', // 9
      'test "$(npx sepal-hub ca status --jsn | jq .)" = x && sudo sepal-agent statuz', // 10
      'npx sepal-hub vpn server-config --out DIR --name N [--proto udp|tcp]', // 11
      '    [--bogus-synopsis] --json', // 12
      'sepal-hub --data-dir /x node list', // 13
      '```', // 14
      '```json', // 15
      '{ "x": "sepal-hub node list --nope" }', // 16
      '```', // 17
      '```console', // 18
      '$ sepal-agent status --state-dir /s --verbose', // 19
      'sepal-agent status --output-line-is-ignored', // 20
      '```', // 21
      '```sh', // 22
      'hub keys list --json; sepal-agent --help; sepal-hub --version', // 23
      'D=$(mktemp -d)/sepal-hub; X=$(date) sepal-hub audit verify --db "/b/hub-$(date +%F).db" --bogus', // 24
      'cat > m.json <<EOF', // 25
      'sepal-hub inside a here-document --is-data', // 26
      'EOF', // 27
      '```', // 28
    ].join('\n');
    const { invocations, problems } = checkDoc('made-up.md', md, SPECS);
    expect(problems).toEqual([
      'docs/made-up.md:4: sepal-hub node list --frobnicate: unknown flag',
      'docs/made-up.md:7: sepal-agent enroll --tokn: unknown flag',
      'docs/made-up.md:9: sepal-hub node lisst: unknown command',
      'docs/made-up.md:10: sepal-hub ca status --jsn: unknown flag',
      'docs/made-up.md:10: sepal-agent statuz: unknown command',
      'docs/made-up.md:12: sepal-hub vpn server-config --bogus-synopsis: unknown flag',
      'docs/made-up.md:13: sepal-hub --data-dir: unknown command',
      'docs/made-up.md:19: sepal-agent status --verbose: unknown flag',
      'docs/made-up.md:24: sepal-hub audit verify --bogus: unknown flag',
    ]);
    expect(invocations.map((i) => `${i.line}:${i.via}`)).toEqual([
      '4:sepal-hub', '6:sepal-agent', '8:sepal-hub', '9:hub', '10:sepal-hub', '10:sepal-agent', '11:sepal-hub', '13:sepal-hub',
      '19:sepal-agent', '23:hub', '23:sepal-agent', '23:sepal-hub', '24:sepal-hub',
    ]);
  });
});
