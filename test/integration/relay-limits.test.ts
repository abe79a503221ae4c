import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { expect, it, onTestFinished } from 'vitest';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { bundleForNode } from '../support/bundle.js';

function* bigMessage(bytes: number): Generator<Buffer> {
  yield Buffer.from('From: a@test.local\r\nTo: b@example.test\r\nSubject: big\r\n\r\n');
  const line = Buffer.from(`${'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo'.repeat(2).slice(0, 76)}\r\n`);
  const block = Buffer.alloc(line.length * 1000);
  for (let i = 0; i < 1000; i++) line.copy(block, i * line.length);
  for (let sent = 0; sent < bytes; sent += block.length) yield block;
}

it('relays a 50 MB message with the relay process peak RSS under 200 MB', { timeout: 120_000 }, async () => {
  const sink = await startSmtpSink();
  const spool = mkdtempSync(join(tmpdir(), 'sg-rss-spool-'));
  const bundle = bundleForNode(join(import.meta.dirname, 'relay-rss-child.ts'));
  onTestFinished(() => bundle.remove());
  const child = spawn(
    process.execPath,
    // Bundled for plain node: without a TypeScript loader in the process, the RSS measured is the relay's.
    [bundle.file, String(sink.port), spool],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  child.stdout.on('data', (c: Buffer) => {
    buf += c.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  const line = async (prefix: string) => {
    for (;;) {
      const l = lines.find((x) => x.startsWith(prefix));
      if (l) return l;
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  try {
    const port = Number((await line('ready ')).split(' ')[1]);
    const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
    const info = await t.sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test'] },
      raw: Readable.from(bigMessage(50 * 1024 * 1024)),
    });
    t.close();
    expect(info.response).toMatch(/^250 /);
    const [, rssKb, code] = (await line('rss ')).split(' ');
    expect(code).toBe('250');
    const [got] = await sink.waitFor(1);
    expect(got!.bytes.length).toBeGreaterThan(50 * 1024 * 1024);
    expect(Number(rssKb) / 1024).toBeLessThan(200);
    console.log(`relay peak RSS for a 50 MB message: ${(Number(rssKb) / 1024).toFixed(0)} MB`);
    expect(readdirSync(spool)).toEqual([]);
  } finally {
    child.stdin.end();
    await new Promise((r) => child.once('exit', r));
    await sink.close();
    rmSync(spool, { recursive: true, force: true });
  }
});
