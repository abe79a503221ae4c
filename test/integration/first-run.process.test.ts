/**
 * The README's quick start as a new operator meets it, with the shipped config/first-run.yaml
 * (only its two ports moved to free ones through the environment): the relay prints where the
 * quarantine page is and where its token was created; a Russian message (koi8-r Subject,
 * windows-1251 From name, koi8-r body) refused with 550 reads decoded in `quarantine list` and
 * `show`, the API and the page in a real Chromium; the page's release goes to the first-run
 * directory next hop; and the state sits beside the config file whatever the working directory.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { chromium, type Browser } from 'playwright-core';
import { afterEach, expect, it } from 'vitest';
import { runSandgate } from '../support/cli.js';
import { BODY_LINES, cyrillicMail, FROM_ADDRESS, FROM_NAME, SUBJECT } from '../support/cyrillic-mail.js';
import { startRelayProcess } from '../support/relay-process.js';
import { EICAR } from '../support/specimens.js';
import { tempDir } from '../support/tmp.js';

const FIRST_RUN = join(import.meta.dirname, '../../config/first-run.yaml');
const CHROMIUM = '/usr/bin/chromium';
const withBrowser = existsSync(CHROMIUM) || Boolean(process.env.CI);

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function send(port: number, raw: Buffer): Promise<number> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ envelope: { from: FROM_ADDRESS, to: ['rcpt@example.net'] }, raw });
    return 250;
  } catch (err) {
    return (err as { responseCode?: number }).responseCode ?? -1;
  } finally {
    t.close();
  }
}

it('first run: page address and created token, a Russian item decoded everywhere, release to the directory', async () => {
  // A checkout of our own: config/first-run.yaml as shipped.
  const checkout = tempDir();
  mkdirSync(join(checkout, 'config'));
  const config = join(checkout, 'config', 'first-run.yaml');
  copyFileSync(FIRST_RUN, config);
  const state = join(checkout, '.sandgate');
  // Started from somewhere else: relative paths follow the config file, not the working directory.
  const elsewhere = tempDir();
  const relay = await startRelayProcess(config, true, {
    cwd: elsewhere,
    env: { SANDGATE_RELAY__LISTEN: '127.0.0.1:0', SANDGATE_ADMIN__LISTEN: '127.0.0.1:0' },
  });
  cleanups.push(() => relay.stop());

  // The page's address and where the token is: printed at start, the token file made 0600.
  const page = await relay.waitForRecord((r) => r.event === 'admin.page');
  expect(page).toMatchObject({
    url: `http://127.0.0.1:${relay.adminPort}/quarantine`,
    tokenFile: join(state, 'admin.token'),
    tokenCreated: true,
  });
  expect(statSync(join(state, 'admin.token')).mode & 0o777).toBe(0o600);
  const token = readFileSync(join(state, 'admin.token'), 'utf8').trim();
  expect(token.length).toBeGreaterThanOrEqual(16);
  expect(existsSync(join(elsewhere, '.sandgate'))).toBe(false);

  // Clean mail goes to the first-run directory next hop; EICAR in a Russian message is refused.
  const clean = Buffer.from('From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nhi\r\n');
  expect(await send(relay.relayPort, clean)).toBe(250);
  const delivered = join(state, 'delivered');
  expect(readdirSync(delivered)).toHaveLength(1);
  // Scanning what sandgate delivered: the mark's state is in the report, not a warning on stderr.
  const deliveredFile = join(delivered, readdirSync(delivered)[0]!);
  const rescan = await runSandgate(['scan', deliveredFile, '--config', config], { cwd: elsewhere });
  expect(rescan.stderr).toBe('');
  expect(rescan.code).toBe(0);
  expect(rescan.stdout).toMatch(/^mark\s+invalid \(mac\): /m);
  expect(await send(relay.relayPort, cyrillicMail({ attachment: EICAR }))).toBe(550);

  // quarantine list from a third directory, with the config file's path: the same state, decoded.
  const cliCwd = tempDir();
  const list = await runSandgate(['quarantine', 'list', '--config', config], {
    cwd: cliCwd,
    env: { TZ: 'Asia/Yekaterinburg' },
  });
  expect(list.stderr).toBe('');
  expect(list.code).toBe(0);
  const rows = list.stdout.trim().split('\n');
  expect(rows).toHaveLength(2);
  expect(rows[1]).toContain(SUBJECT);
  expect(rows[1]).toMatch(/ \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \+05:00 /);
  expect(existsSync(join(cliCwd, '.sandgate'))).toBe(false);
  const id = rows[1]!.split(/\s+/)[0]!;
  const show = await runSandgate(['quarantine', 'show', id, '--config', config], { cwd: cliCwd });
  expect(show.code).toBe(0);
  expect(show.stdout).toContain(`from:        ${FROM_NAME} <${FROM_ADDRESS}>`);
  expect(show.stdout).toContain(`  | ${BODY_LINES[1]}`);

  // The API, with the created token.
  const api = `http://127.0.0.1:${relay.adminPort}/api`;
  const auth = { authorization: `Bearer ${token}` };
  const listed = (await (
    await fetch(`${api}/quarantine?subject=${encodeURIComponent('счет')}`, { headers: auth })
  ).json()) as {
    items: Array<{ id: string; subject: string }>;
  };
  expect(listed.items.map((i) => [i.id, i.subject])).toEqual([[id, SUBJECT]]);
  const item = (await (await fetch(`${api}/quarantine/item?id=${id}`, { headers: auth })).json()) as {
    headers: Array<{ name: string; value: string }>;
    preview: { text: string };
  };
  expect(item.headers.find((h) => h.name === 'From')?.value).toBe(`${FROM_NAME} <${FROM_ADDRESS}>`);
  expect(item.preview.text.split('\n')).toEqual(BODY_LINES);

  if (!withBrowser) return;
  // The page in a real Chromium: the operator pastes the token, sees the item decoded, releases it.
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--headless'],
  });
  cleanups.push(() => browser.close());
  const context = await browser.newContext({ timezoneId: 'Asia/Yekaterinburg' });
  const tab = await context.newPage();
  const errors: string[] = [];
  tab.on('pageerror', (e) => errors.push(e.message));
  tab.on('dialog', (d) => void d.accept());
  await tab.goto(String(page.url));
  await tab.fill('#token', token);
  await tab.fill('#by', 'first-run');
  await tab.click('#load');
  const row = tab.locator(`tr[data-id="${id}"]`);
  await row.waitFor();
  const rowText = (await row.textContent()) ?? '';
  expect(rowText).toContain(SUBJECT);
  expect(rowText).toMatch(/\d{2}:\d{2}:\d{2} \+05:00/);
  await row.getByRole('button', { name: 'Show' }).click();
  await expect.poll(() => tab.textContent('#d-body')).toContain(`From: ${FROM_NAME} <${FROM_ADDRESS}>`);
  expect(await tab.textContent('#d-body')).toContain(`Subject: ${SUBJECT}`);
  expect(await tab.textContent('#d-preview')).toContain(BODY_LINES[1]);
  // Release from the item's own release box: address field, allow-hash box and button together.
  const box = tab.locator('#d-release');
  await box.getByLabel(/To \(optional/).fill('postmaster@example.net');
  expect(await box.getByLabel(/allow its blocking attachments/).isVisible()).toBe(true);
  await box.getByRole('button', { name: 'Release' }).click();
  await expect.poll(() => tab.textContent('#status')).toContain(`Released ${id}`);
  await expect.poll(() => readdirSync(delivered).length).toBe(2);
  const released = readdirSync(delivered)
    .map((f) => readFileSync(join(delivered, f), 'latin1'))
    .find((m) => m.includes('X-Sandgate-Mark:') && m.includes('postmaster@example.net'));
  expect(released).toBeDefined();
  expect(errors).toEqual([]);
});
