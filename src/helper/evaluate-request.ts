import type { Evaluation, Evaluator } from '../core/evaluation.js';
import { isSandgateError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { describeOutcomes } from '../core/outcome.js';
import { FileMessage } from '../mime/spool.js';
import { QUEUE_FILE_FLAGS, readQueueFile, resolveQueuePath } from './envelope.js';
import type { Reply } from './protocol.js';
import { replyForEvaluation, type HelperTempfailReason } from './replies.js';
import type { Request } from './request.js';
import type { HelperSettings } from './settings.js';

/** What came of one FILE request: the core's evaluation, or why the helper answers tempfail itself. */
export type RequestResult =
  { readonly evaluation: Evaluation; readonly reply: Reply } | { readonly tempfail: HelperTempfailReason };

/** Reads one FILE request's queue file and evaluates it under the request's deadline. */
export async function evaluateRequest(
  req: Request,
  evaluator: Evaluator,
  ctx: { readonly settings: HelperSettings; readonly log: Logger; readonly now: () => number },
): Promise<RequestResult> {
  const { settings, log, now } = ctx;
  let message: FileMessage;
  try {
    const abs = resolveQueuePath(settings.baseDir, req.path as string);
    const qf = await readQueueFile(abs);
    message = new FileMessage(req.msgId, qf.envelope, abs, qf.bodyOffset, qf.size, QUEUE_FILE_FLAGS);
    log.debug(
      {
        event: 'helper.queue_file',
        seq: req.seq,
        msgId: req.msgId,
        module: qf.module,
        recipients: qf.envelope.recipients.length,
        bytes: qf.size,
      },
      'queue file read',
    );
  } catch (err) {
    const reason = queueFileReason(err);
    log.warn(
      { event: 'helper.queue_file_error', seq: req.seq, msgId: req.msgId, path: req.path, reason, err },
      'cannot use the queue file; answering tempfail',
    );
    return { tempfail: reason };
  }
  // Answered (deadline) or abandoned (QUIT) while the file was being read: nothing to evaluate.
  if (req.state === 'done') return { tempfail: 'deadline' };
  const ev = await evaluator.evaluate(message, { deadline: req.answerBy, signal: req.abort.signal });
  const reply = replyForEvaluation(ev, settings.replies);
  log.info(
    {
      event: 'helper.reply',
      seq: req.seq,
      msgId: req.msgId,
      action: ev.decision.action,
      verdict: ev.decision.verdict,
      reason: ev.decision.reason,
      threats: ev.decision.threats,
      outcomes: describeOutcomes(ev.outcomes),
      reply: reply.kind,
      alreadyJudged: ev.alreadyJudged,
      quarantineId: ev.quarantineId,
      bytes: message.size,
      ms: now() - req.received,
    },
    'answered',
  );
  return { evaluation: ev, reply };
}

function queueFileReason(err: unknown): HelperTempfailReason {
  if (isSandgateError(err, 'ERR_MESSAGE_MALFORMED')) return 'queue-file-malformed';
  if (isSandgateError(err, 'ERR_INPUT_NOT_FOUND')) {
    const reason = err.details.reason;
    if (reason === 'outside-base') return 'outside-base';
    if (reason === 'missing') return 'queue-file-missing';
    if (reason === 'not-a-file') return 'queue-file-not-regular';
    if (reason === 'symlink') return 'queue-file-symlink';
    return 'queue-file-unreadable';
  }
  return 'queue-file-unreadable';
}
