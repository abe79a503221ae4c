import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');
const SRC = join(ROOT, 'src');
const DOC = join(ROOT, 'docs/logging.md');

const EVENT_NAME = /^[a-z]+(\.[a-z_]+)+$/;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
type Level = (typeof LEVELS)[number];

interface Site {
  readonly file: string;
  readonly line: number;
  readonly name: string;
  /** The pino method of the call the event is logged with; undefined when not found (child bindings). */
  readonly level: Level | undefined;
}

/**
 * The shapes an event name takes in src/. Each captures the name in group `name`.
 * - an `event` property with a string literal: `log.warn({ event: 'pt.retry', ... }, 'text')`,
 *   also inside child() bindings and objects built before the call;
 * Events passed as an argument to a small logging helper need a pattern here: the guard test
 * below fails for any `event` property whose value is not a literal until one is added.
 */
const EVENT_PATTERNS: readonly RegExp[] = [/\bevent\s*:\s*(['"`])(?<name>[^'"`\n$]+)\1/g];

/** An `event` property (or a parameter typed for one) that is not a plain string literal. */
const NON_LITERAL_EVENT = [
  /\bevent\s*:(?!\s*['"`{])\s*(?<what>[^,}\n]+)/g,
  /\bevent\s*:\s*`[^`\n]*\$\{/g,
  /[{,]\s*event\s*(?=[,}])/g,
];

/** Comments out, line numbers kept: full-line // comments and block comments. */
function stripComments(text: string): string {
  return text
    .replace(/(^|\n)([ \t]*)\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' '))
    .replace(/(^|\n)([ \t]*)\/\/[^\n]*/g, (m) => m.replace(/[^\n]/g, ' '));
}

function lineOf(text: string, index: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** The level of the innermost open `.info(`-style call around `index`, if any. */
function levelAt(text: string, index: number): Level | undefined {
  const call = /\.(trace|debug|info|warn|error|fatal)\(/g;
  let found: Level | undefined;
  for (const m of text.slice(Math.max(0, index - 600), index).matchAll(call)) {
    const start = Math.max(0, index - 600) + m.index + m[0].length;
    let depth = 1;
    for (let i = start; i < index && depth > 0; i++) {
      const c = text[i];
      if (c === '(' || c === '{' || c === '[') depth++;
      else if (c === ')' || c === '}' || c === ']') depth--;
    }
    if (depth > 0) found = m[1] as Level;
  }
  return found;
}

function eventSites(text: string, file: string): Site[] {
  const code = stripComments(text);
  const sites: Site[] = [];
  for (const pattern of EVENT_PATTERNS) {
    for (const m of code.matchAll(pattern)) {
      const name = m.groups?.name;
      if (name === undefined) continue;
      sites.push({ file, line: lineOf(code, m.index), name, level: levelAt(code, m.index) });
    }
  }
  return sites;
}

function nonLiteralEvents(text: string, file: string): string[] {
  const code = stripComments(text);
  const out: string[] = [];
  for (const pattern of NON_LITERAL_EVENT) {
    for (const m of code.matchAll(pattern)) out.push(`${file}:${lineOf(code, m.index)}: ${m[0].trim()}`);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|mts|js|mjs)$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out.sort();
}

function codeSites(): Site[] {
  return sourceFiles(SRC).flatMap((path) => eventSites(readFileSync(path, 'utf8'), relative(ROOT, path)));
}

interface DocRow {
  readonly name: string;
  readonly level: string;
  readonly where: string;
  readonly meaning: string;
}

/** Rows `| `name` | level | where | meaning |` of the catalogue (the tables after its heading). */
function docRows(): DocRow[] {
  const text = readFileSync(DOC, 'utf8');
  const at = text.indexOf('\n## Event catalogue');
  expect(at, 'docs/logging.md has a "## Event catalogue" section').toBeGreaterThan(-1);
  const rows: DocRow[] = [];
  for (const line of text.slice(at).split('\n')) {
    const m = /^\| `([^`]+)` \|(.*)\|\s*$/.exec(line);
    if (!m) continue;
    const cells = (m[2] as string).split(' | ').map((c) => c.trim());
    expect(cells.length, `row for ${m[1]} has level, where and meaning cells`).toBe(3);
    rows.push({
      name: m[1] as string,
      level: cells[0] as string,
      where: cells[1] as string,
      meaning: cells[2] as string,
    });
  }
  return rows;
}

describe('docs/logging.md event catalogue', () => {
  const sites = codeSites();
  const rows = docRows();

  it('lists exactly the events logged in src/', () => {
    const inCode = new Set(sites.map((s) => s.name));
    const inDoc = new Set(rows.map((r) => r.name));
    // Not vacuous: the collector sees the summary lines every deployment relies on.
    expect(inCode).toContain('message.verdict');
    expect(inCode).toContain('relay.message');
    expect(inCode).toContain('helper.reply');
    const undocumented = [...inCode].filter((n) => !inDoc.has(n)).sort();
    const stale = [...inDoc].filter((n) => !inCode.has(n)).sort();
    expect({ undocumented, stale }).toEqual({ undocumented: [], stale: [] });
  });

  it('has one row per event, each with a level, a where and a meaning', () => {
    const names = rows.map((r) => r.name);
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
    for (const r of rows) {
      expect(LEVELS as readonly string[], `${r.name} level`).toContain(r.level);
      expect(r.where, `${r.name} where`).not.toBe('');
      expect(r.meaning.length, `${r.name} meaning`).toBeGreaterThan(10);
    }
  });

  it('names every event area.thing', () => {
    for (const n of [...sites.map((s) => s.name), ...rows.map((r) => r.name)]) {
      expect(n, n).toMatch(EVENT_NAME);
    }
  });

  it('documents the level each event is logged at', () => {
    const doc = new Map(rows.map((r) => [r.name, r.level]));
    const wrong = sites
      .filter((s) => s.level !== undefined && doc.has(s.name) && doc.get(s.name) !== s.level)
      .map((s) => `${s.file}:${s.line} ${s.name} is ${s.level}, documented as ${doc.get(s.name)}`);
    expect(wrong).toEqual([]);
  });

  it('finds every event: no event property in src/ is computed (add its pattern to EVENT_PATTERNS)', () => {
    const computed = sourceFiles(SRC).flatMap((path) =>
      nonLiteralEvents(readFileSync(path, 'utf8'), relative(ROOT, path)),
    );
    expect(computed).toEqual([]);
  });
});

describe('event collector', () => {
  it('reads single- and multi-line calls with their level and skips comments', () => {
    const text = [
      "log.info({ event: 'a.one', n: 1 }, 'x');",
      '// log.warn({ event: "a.commented" });',
      '/**',
      " * { event: 'a.in_doc' }",
      ' */',
      'this.o.log.warn(',
      '  {',
      "    event: 'b.two',",
      '    nested: { x: (1 + 2) },',
      '  },',
      "  'y',",
      ');',
      "const bindings = { event: 'c.three' };",
      "log.error({ err, event: 'd.four' });",
    ].join('\n');
    expect(eventSites(text, 'f.ts')).toEqual([
      { file: 'f.ts', line: 1, name: 'a.one', level: 'info' },
      { file: 'f.ts', line: 8, name: 'b.two', level: 'warn' },
      { file: 'f.ts', line: 13, name: 'c.three', level: undefined },
      { file: 'f.ts', line: 14, name: 'd.four', level: 'error' },
    ]);
  });

  it('flags event names it cannot read', () => {
    const text = [
      'log.info({ event: name });',
      'log.info({ event, n });',
      'log.info({ event: `relay.${kind}` });',
      'function note(log: Logger, event: string) {}',
      'onProgress?: (event: { scanner: string }) => void;',
      "log.info({ event: 'ok.literal' });",
    ].join('\n');
    expect(nonLiteralEvents(text, 'f.ts').map((s) => s.split(':')[1])).toEqual(['1', '4', '3', '2']);
  });
});
