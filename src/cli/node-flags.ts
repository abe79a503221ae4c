/**
 * The flags sandgate's launchers start node with: the `sandgate` command's shebang
 * (src/cli/main.ts), the Docker image's entrypoint, `npm start`, and the CommuniGate Program Path
 * in docs/communigate.md. test/unit/cli/node-flags.test.ts keeps them equal to this list, and
 * bench/relay.ts runs both filters it compares with them.
 *
 * --max-semi-space-size=4 (MB; Node 20's default on 64-bit is 16): V8 starts marking the old
 * generation as soon as the room left below its limit is smaller than the young generation. After
 * a mark-compact of a heap that grows slowly (the relay's), V8 set the limit 16 MB or less above
 * the live heap (--trace-incremental-marking: "22MB / 38MB / 16MB", used / limit / room), no more
 * than a 16 MB young generation, so marking started again at once: 2-4 mark-compacts per 1,000
 * relayed messages, each stalling every connection for 8-12 ms (the relay's p99 tail). With a
 * 4 MB young generation there was none in the 15 benchmark rounds of 1,000 messages, at no
 * measured cost in CPU or peak RSS (docs/benchmarks.md).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
