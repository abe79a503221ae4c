// Child process for relay-limits.test.ts: a relay whose peak RSS the parent measures.
// argv: <nextHopPort> <spoolDir>. Prints "ready <port>", then "rss <maxRSS KB>" after each message.
import { relaySchema } from '../../src/config/relay.js';
import type { Evaluation, Evaluator } from '../../src/core/evaluation.js';
import { silentLogger } from '../../src/core/logger.js';
import type { MessageSource } from '../../src/core/message.js';
import { buildRelay } from '../../src/cli/compose/relay.js';

/** Reads the whole message as a scanner would (streaming), and lets it through. */
class StreamingEvaluator implements Evaluator {
  async evaluate(message: MessageSource): Promise<Evaluation> {
    let n = 0;
    for await (const c of message.open()) n += (c as Buffer).length;
    return {
      msgId: message.msgId,
      decision: {
        action: 'deliver',
        keepCopy: false,
        verdict: 'clean',
        reason: 'clean',
        threats: [],
        failOpen: false,
      },
      outcomes: [],
      contentKey: String(n),
      headers: [{ name: 'X-Sandgate-Verdict', value: 'clean' }],
      stripHeaders: ['X-Sandgate-Verdict'],
      alreadyJudged: false,
      ms: 0,
    };
  }
}

const [hopPort, spoolDir] = process.argv.slice(2);
const relay = buildRelay({
  relay: relaySchema.parse({ listen: '127.0.0.1:0' }),
  nextHop: { kind: 'smtp', host: '127.0.0.1', port: Number(hopPort) },
  evaluator: new StreamingEvaluator(),
  log: silentLogger,
  spoolDir: spoolDir as string,
  maxMessageSize: 60 * 1024 * 1024,
  memorySpoolThreshold: 256 * 1024,
}).server;
relay.on('message', (m) => process.stdout.write(`rss ${process.resourceUsage().maxRSS} ${m.code}\n`));
const { port } = await relay.listen('127.0.0.1', 0);
process.stdout.write(`ready ${port}\n`);
process.stdin.resume();
process.stdin.on('end', () => void relay.close().then(() => process.exit(0)));
