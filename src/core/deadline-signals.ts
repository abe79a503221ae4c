import { setMaxListeners } from 'node:events';

/** Width of a slot: a shared signal fires at most this much after the deadline it was asked for. */
export const DEADLINE_SLOT_MS = 250;

/**
 * AbortSignals that fire at a deadline, one per slot of DEADLINE_SLOT_MS shared by every call whose
 * deadline falls in it: the signal fires at the slot's end, never before the deadline and less
 * than a slot after it.
 *
 * Why not an AbortController (or AbortSignal.timeout()) per call: on Node.js 20 an AbortSignal
 * survives the young-generation collections after it is dropped and is promoted to the old
 * generation (a loop that only makes signals promotes about a fifth of what it allocates), and
 * the old generation's growth brings the mark-compacts that made the relay's p99 tail. A signal
 * per relayed message promoted 0.5-0.9 MB per 1,000 messages (--trace-gc-nvp; the pass-through
 * proxy promotes 0.6 MB in all). With slots there is one signal per 250 ms of deadlines, however
 * many messages share it; each lives until its slot ends.
 */
export class DeadlineSignals {
  private readonly slots = new Map<number, AbortSignal>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A signal aborted with a TimeoutError at `deadline` (epoch ms, on this instance's clock) or up to a slot later. */
  at(deadline: number): AbortSignal {
    const slot = Math.ceil(deadline / DEADLINE_SLOT_MS) * DEADLINE_SLOT_MS;
    const shared = this.slots.get(slot);
    if (shared !== undefined) return shared;
    const controller = new AbortController();
    // Every call in the slot adds its own listeners (and removes them when done): no leak warning
    // for a count that is the number of calls in flight.
    setMaxListeners(0, controller.signal);
    this.slots.set(slot, controller.signal);
    const timer = setTimeout(
      () => {
        this.slots.delete(slot);
        controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
      },
      Math.max(1, slot - this.now()),
    );
    timer.unref();
    return controller.signal;
  }

  /** Signals not yet fired (tests). */
  get pending(): number {
    return this.slots.size;
  }
}
