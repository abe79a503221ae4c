import net from 'node:net';

export interface TalkReply {
  code: number;
  text: string;
}

/** A raw SMTP client for byte-exact tests: send any bytes, read replies one at a time. */
export class SmtpTalk {
  private buf = '';
  private partial: string[] = [];
  private replies: TalkReply[] = [];
  private waiters: Array<(r: TalkReply) => void> = [];
  closed = false;
  private closeWaiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      let i: number;
      while ((i = this.buf.indexOf('\r\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        this.partial.push(line);
        if (line[3] === '-') continue;
        const r = { code: Number(line.slice(0, 3)), text: this.partial.map((l) => l.slice(4)).join('\n') };
        this.partial = [];
        const w = this.waiters.shift();
        if (w) w(r);
        else this.replies.push(r);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  static async open(port: number): Promise<SmtpTalk> {
    const socket = net.connect({ host: '127.0.0.1', port });
    const t = new SmtpTalk(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return t;
  }

  read(): Promise<TalkReply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      this.closeWaiters.push(() => reject(new Error('connection closed')));
    });
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(line: string): Promise<TalkReply> {
    this.send(`${line}\r\n`);
    return this.read();
  }

  whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  end(): void {
    this.socket.destroy();
  }
}
