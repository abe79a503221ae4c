import net from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { SmtpClient } from '../../../src/smtp/smtp-client.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('keeps a UTF-8 character whole when a reply arrives split inside it', async () => {
  const text = Buffer.from('550 5.7.1 Получатель недоступен\r\n');
  // Inside the two bytes of "П" (0xD0 0x9F): the first read ends after 0xD0.
  const cut = text.indexOf(0x9f);
  const server = net.createServer((socket) => {
    socket.write('220 fake.test ESMTP\r\n');
    socket.on('data', (d: Buffer) => {
      const line = d.toString('latin1');
      if (/^EHLO/i.test(line)) socket.write('250 fake.test\r\n');
      else if (/^MAIL/i.test(line)) {
        socket.write(text.subarray(0, cut));
        // A separate read on the client side: the first part has gone before this is written.
        setImmediate(() => socket.write(text.subarray(cut)));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
  const client = await SmtpClient.connect({
    host: '127.0.0.1',
    port: (server.address() as net.AddressInfo).port,
    lmtp: false,
    name: 'sandgate.test',
    timeout: 5000,
    tls: 'none',
  });
  cleanup.push(() => client.close());
  const reply = await client.command('MAIL FROM:<a@test.local>');
  expect(reply).toEqual({ code: 550, enhanced: '5.7.1', lines: ['Получатель недоступен'] });
});
