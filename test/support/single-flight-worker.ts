/**
 * A separate process for the cross-process single-flight test: evaluates one message on a shared
 * state directory with a slow counting scanner, prints the evaluation as JSON and exits.
 * argv: stateDir countFile messageFile
 */
import { readFileSync } from 'node:fs';
import { CountingScanner } from './counting-scanner.js';
import { message, startRuntime } from './runtime.js';

const [stateDir, countFile, messageFile] = process.argv.slice(2) as [string, string, string];
const scanner = new CountingScanner({ delayMs: 400, countFile });
const runtime = await startRuntime(stateDir, [scanner]);
// Both workers wait for "go" on stdin so they start scanning at the same moment.
process.stdin.once('data', () => {
  void (async () => {
    const result = await runtime.evaluator.evaluate(message(readFileSync(messageFile, 'utf8')), {
      deadline: Date.now() + 20_000,
    });
    await runtime.close();
    process.stdout.write(
      JSON.stringify({ action: result.decision.action, cached: result.outcomes[0]?.cached }) + '\n',
    );
    process.exit(0);
  })();
});
process.stdout.write('ready\n');
