// Old build against new build, interleaved ABBA, for a refactoring that must not cost speed (issue 16:
// "bench/core.ts and bench/relay.ts medians of interleaved ABBA runs of the old and new build within
// 10 %"). The old build is a git revision checked out into a temporary worktree (sharing this tree's
// node_modules); each round runs one benchmark in the old tree, then twice in the new one, then
// in the old again (A B B A), so drift of the machine's load falls on both builds alike.
//   npx tsx bench/abba.ts --old=REV [--pairs=2] [--bench=core,relay] [--relay-messages=2000]
// core: bench/core.ts, msg/s and CPU ms per message of each case. relay: row (a) of bench/relay.ts
// (--skip-postfix --skip-rss), the relay's msg/s and CPU ms per message, and its ratio to the
// pass-through proxy measured in the same run (the ratio cancels most of the machine's drift).
// Prints a table of medians; new/old above 0.90 for msg/s (below 1.10 for CPU) meets the target.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const NEW = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name: string, fallback?: string): string | undefined =>
  args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const oldRev = opt('old');
if (oldRev === undefined) {
  console.error('usage: npx tsx bench/abba.ts --old=REV [--pairs=2] [--bench=core,relay]');
  process.exit(2);
}
const pairs = Number(opt('pairs', '2'));
const benches = (opt('bench', 'core,relay') ?? '').split(',').filter(Boolean);
const relayMessages = opt('relay-messages', '2000') ?? '2000';

/** One measured value of one run: bench, row, metric. */
type Sample = { bench: string; row: string; metric: string; value: number };

function run(cwd: string, script: string, scriptArgs: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', script, ...scriptArgs], { cwd, stdio: ['ignore', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(out).toString('utf8'))
        : reject(new Error(`${script} in ${cwd} exited with ${code}`)),
    );
  });
}

/** bench/core.ts prints `case | messages | msgsPerSec | cpuMsPerMsg | ...`. */
function parseCore(text: string): Sample[] {
  const lines = text.split('\n').filter((l) => l.includes('|'));
  const header = lines[0]?.split('|').map((s) => s.trim()) ?? [];
  const rate = header.indexOf('msgsPerSec');
  const cpu = header.indexOf('cpuMsPerMsg');
  if (rate < 0 || cpu < 0) throw new Error(`bench/core.ts printed no table I know:\n${text}`);
  return lines
    .slice(1)
    .map((l) => l.split('|').map((s) => s.trim()))
    .filter((cells) => cells.length === header.length && !/^-+$/.test(cells[0] ?? ''))
    .flatMap((cells) => [
      { bench: 'core', row: cells[0]!, metric: 'msg/s', value: Number(cells[rate]) },
      { bench: 'core', row: cells[0]!, metric: 'CPU ms/msg', value: Number(cells[cpu]) },
    ]);
}

/** Row (a) of bench/relay.ts: `| path | msg/s (runs) | vs proxy | filter CPU ms/msg | ...`. */
function parseRelay(text: string): Sample[] {
  const row = (name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`| ${name} |`));
    if (line === undefined) throw new Error(`bench/relay.ts printed no "${name}" row:\n${text}`);
    const cells = line.split('|').map((s) => s.trim());
    return { rate: Number(/^\d+/.exec(cells[2] ?? '')?.[0]), cpu: Number(cells[4]) };
  };
  const relay = row('sandgate relay (rules)');
  const proxy = row('pass-through proxy');
  return [
    { bench: 'relay', row: 'row (a), relay', metric: 'msg/s', value: relay.rate },
    { bench: 'relay', row: 'row (a), relay', metric: 'CPU ms/msg', value: relay.cpu },
    { bench: 'relay', row: 'row (a), relay', metric: '% of proxy', value: (relay.rate / proxy.rate) * 100 },
  ];
}

async function measure(tree: string, bench: string): Promise<Sample[]> {
  if (bench === 'core') return parseCore(await run(tree, 'bench/core.ts', []));
  if (bench === 'relay')
    return parseRelay(await run(tree, 'bench/relay.ts', [relayMessages, '--skip-postfix', '--skip-rss']));
  throw new Error(`unknown benchmark ${bench} (core, relay)`);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const oldTree = mkdtempSync(join(tmpdir(), 'sg-abba-old-'));
rmSync(oldTree, { recursive: true });
const oldCommit = execFileSync('git', ['rev-parse', '--short', oldRev], {
  cwd: NEW,
  encoding: 'utf8',
}).trim();
const newCommit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
  cwd: NEW,
  encoding: 'utf8',
}).trim();
const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bench'], {
  cwd: NEW,
  encoding: 'utf8',
});
execFileSync('git', ['worktree', 'add', '--detach', oldTree, oldRev], { cwd: NEW, stdio: 'ignore' });
symlinkSync(join(NEW, 'node_modules'), join(oldTree, 'node_modules'));
const samples: Record<'old' | 'new', Sample[]> = { old: [], new: [] };
try {
  const started = new Date().toISOString();
  for (const bench of benches) {
    for (let p = 0; p < pairs; p++) {
      for (const which of ['old', 'new', 'new', 'old'] as const) {
        const got = await measure(which === 'old' ? oldTree : NEW, bench);
        samples[which].push(...got);
        console.error(`abba: ${bench} pair ${p + 1}/${pairs}: ${which} done`);
      }
    }
  }
  console.log(
    `# old ${oldCommit} against new ${newCommit}${dirty ? ' (with uncommitted changes)' : ''}, ABBA x${pairs} per benchmark, started ${started}`,
  );
  console.log('| bench | row | metric | old median | new median | new/old |');
  console.log('|---|---|---|---|---|---|');
  const keys = [...new Set(samples.new.map((s) => `${s.bench}\u0000${s.row}\u0000${s.metric}`))];
  for (const key of keys) {
    const [bench, row, metric] = key.split('\u0000') as [string, string, string];
    const pick = (which: 'old' | 'new') =>
      samples[which]
        .filter((s) => s.bench === bench && s.row === row && s.metric === metric)
        .map((s) => s.value);
    const o = median(pick('old'));
    const n = median(pick('new'));
    console.log(
      `| ${bench} | ${row} | ${metric} | ${o.toFixed(metric === 'msg/s' ? 0 : 3)} | ${n.toFixed(metric === 'msg/s' ? 0 : 3)} | ${(n / o).toFixed(2)} |`,
    );
  }
} finally {
  execFileSync('git', ['worktree', 'remove', '--force', oldTree], { cwd: NEW, stdio: 'ignore' });
}
