/**
 * The Russian documents (README.ru.md, docs/communigate.ru.md, docs/pt-sandbox.ru.md) are
 * translations of the English ones, which are the source of truth. Prose is free, but what an
 * administrator copies must be the same in both: every line of the fenced code blocks (comments
 * aside: they are translated), every command and config key written as inline code, and every
 * other inline code span (protocol answers, log events, API paths). The English originals link to
 * their Russian versions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');

const PAIRS = [
  // The README names no config key in inline code (only commands, flags and environment variables).
  { en: 'README.md', ru: 'README.ru.md', link: '(README.ru.md)', keys: true },
  { en: 'docs/communigate.md', ru: 'docs/communigate.ru.md', link: '(communigate.ru.md)', keys: true },
  { en: 'docs/pt-sandbox.md', ru: 'docs/pt-sandbox.ru.md', link: '(pt-sandbox.ru.md)', keys: true },
] as const;

type Kind = 'code block line' | 'command' | 'config key' | 'code';

interface Item {
  readonly kind: Kind;
  readonly text: string;
}

const FENCE = /^\s*(```|~~~)/;
const COMMAND = /^(\$ )?(sandgate|npm|npx|node|swaks|curl|promtool)\s/;
/** `helper.deadline`, `scanners.ptSandbox.inflight.max`, `tokenFile`, `mode: analysis`. */
const CONFIG_KEY = /^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9-]*)*(: .+)?$/;

function kindOf(span: string): Kind {
  if (COMMAND.test(span)) return 'command';
  if (CONFIG_KEY.test(span) && (/[.:]/.test(span) || /[A-Z]/.test(span))) return 'config key';
  return 'code';
}

/** A code block line as it is copied: comments (translated in the Russian text) and blank lines dropped. */
function codeLine(line: string): string | undefined {
  const trimmed = line.trim();
  if (trimmed === '' || trimmed.startsWith('#')) return undefined;
  return trimmed.replace(/\s+#\s.*$/, '').trimEnd();
}

/** Code block lines (in order, repeats kept) and inline code spans (each once) of a Markdown text. */
export function technicalItems(markdown: string): Item[] {
  const items: Item[] = [];
  const spans = new Set<string>();
  let inFence = false;
  for (const line of markdown.split('\n')) {
    if (FENCE.test(line)) {
      inFence = !inFence;
      continue;
    }
    if (inFence) {
      const c = codeLine(line);
      if (c !== undefined) items.push({ kind: 'code block line', text: c });
      continue;
    }
    for (const m of line.matchAll(/`([^`\n]+)`/g)) spans.add(m[1]!);
  }
  for (const s of spans) items.push({ kind: kindOf(s), text: s });
  return items;
}

/** What the Russian document lacks and what it has extra, as readable lines naming the file. */
export function compareDocs(
  en: { file: string; text: string },
  ru: { file: string; text: string },
): string[] {
  const count = (items: Item[]) => {
    const m = new Map<string, { item: Item; n: number }>();
    for (const i of items) {
      const key = `${i.kind}\u0000${i.text}`;
      const e = m.get(key);
      if (e) e.n++;
      else m.set(key, { item: i, n: 1 });
    }
    return m;
  };
  const a = count(technicalItems(en.text));
  const b = count(technicalItems(ru.text));
  const problems: string[] = [];
  for (const [key, { item, n }] of a) {
    const have = b.get(key)?.n ?? 0;
    if (have < n) problems.push(`${ru.file}: missing ${item.kind} \`${item.text}\` (in ${en.file})`);
  }
  for (const [key, { item, n }] of b) {
    const have = a.get(key)?.n ?? 0;
    if (have < n) problems.push(`${ru.file}: extra ${item.kind} \`${item.text}\` (not in ${en.file})`);
  }
  return problems;
}

const read = (file: string) => ({ file, text: readFileSync(join(ROOT, file), 'utf8') });

describe('Russian documents in sync with the English ones', () => {
  for (const pair of PAIRS) {
    it(`${pair.ru} has the command lines, config keys and code of ${pair.en}`, () => {
      const en = read(pair.en);
      const items = technicalItems(en.text);
      // Guards the extraction: a document without these would make the comparison vacuous.
      expect(items.some((i) => i.kind === 'code block line')).toBe(true);
      expect(items.some((i) => i.kind === 'command')).toBe(true);
      expect(items.some((i) => i.kind === 'config key')).toBe(pair.keys);
      expect(compareDocs(en, read(pair.ru)), `${pair.ru} differs from ${pair.en}`).toEqual([]);
    });

    it(`${pair.en} links to ${pair.ru}`, () => {
      expect(read(pair.en).text).toContain(pair.link);
    });

    it(`fails when a command or key changes in ${pair.en} only`, () => {
      const en = read(pair.en);
      const ru = read(pair.ru);
      const items = technicalItems(en.text);
      const line = items.find((i) => i.kind === 'code block line')!.text;
      const changedLine = { file: en.file, text: en.text.replace(line, `${line} --changed`) };
      expect(compareDocs(changedLine, ru)).toEqual([
        `${ru.file}: missing code block line \`${line} --changed\` (in ${en.file})`,
        `${ru.file}: extra code block line \`${line}\` (not in ${en.file})`,
      ]);
      for (const kind of pair.keys ? (['command', 'config key'] as const) : (['command'] as const)) {
        const span = items.find((i) => i.kind === kind)!.text;
        const changed = { file: en.file, text: en.text.replaceAll(`\`${span}\``, `\`${span}x\``) };
        expect(compareDocs(changed, ru)).toContain(
          `${ru.file}: missing ${kind} \`${span}x\` (in ${en.file})`,
        );
      }
    });
  }
});
