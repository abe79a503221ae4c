import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { nextHop, smtpDeliveryOptions } from './delivery.js';
import { pathValue } from './paths.js';
import { networks } from './networks.js';
import { bool, hostPort, int } from './primitives.js';

export type { NextHop } from './delivery.js';

/** Queue mode (relay.mode: queue): the durable spool the relay accepts into and delivers from. */
export const relayQueueSchema = z
  .object({
    /** Queue directory (message files). Default: <stateDir>/queue. One relay per directory. */
    dir: pathValue().optional(),
    /** Budget for scanning one queued message (behavioural analysis takes minutes). */
    scanDeadline: duration.prefault('30m'),
    /** Mail not delivered within this time after acceptance gets a DSN to its sender. */
    maxLifetime: duration.prefault('5d'),
    /** First retry delay after a 4xx or an unreachable next hop; doubles per attempt. */
    retryMin: duration.prefault('1m'),
    /** Longest retry delay. */
    retryMax: duration.prefault('1h'),
    /** Messages scanned and delivered at once (also the most next-hop connections). */
    concurrency: int.pipe(z.number().int().min(1).max(1000)).default(10),
    /** Back-pressure: above this many queued messages, RCPT gets 452 and DATA 451. */
    maxMessages: int.pipe(z.number().int().min(1)).default(10_000),
    /** Back-pressure: above this many queued bytes, RCPT gets 452 and DATA 451. */
    maxBytes: byteSize.prefault('10G'),
    /** Recipients per message; more get 452 4.5.3. */
    maxRecipients: int.pipe(z.number().int().min(1).max(100_000)).default(1000),
    /** Name in the DSNs we send (Reporting-MTA). Default: relay.hostname. */
    reportingMta: z.string().optional(),
  })
  .strict();

/** The SMTP relay (`sandgate relay`): inline or queue mode. */
export const relaySchema = z
  .object({
    listen: hostPort.default({ host: '127.0.0.1', port: 10025 }),
    /** smtp: an SMTP listener (content_filter, smtpd_proxy_filter, smart host). lmtp: an LMTP listener. */
    protocol: z.enum(['smtp', 'lmtp']).prefault('smtp'),
    /** Where clean mail goes: the MTA's re-injection listener (smtp:// or lmtp://), a directory, or CommuniGate's Submitted directory. */
    nextHop: nextHop.default({ kind: 'smtp', host: '127.0.0.1', port: 10026 }),
    /** Greeting name; must differ from the next hop's (Postfix's loop check). */
    hostname: z.string().min(1).prefault('sandgate.localdomain'),
    /** Clients allowed to connect (CIDR or address). Never an open relay. */
    allowedClients: networks.default(['127.0.0.0/8', '::1/128']),
    /**
     * Peers (addresses or CIDR blocks) whose XFORWARD / XCLIENT is believed and who skip the
     * early-talker pause before the greeting. Default: loopback, where the MTA that feeds the filter lives.
     */
    trustedPeers: networks.default(['127.0.0.1', '::1']),
    /** Answer the final dot within this budget; below Postfix's smtp_data_done_timeout (600 s). */
    deadline: duration.prefault('300s'),
    /** Concurrent client connections; more get 421. */
    maxClients: int.pipe(z.number().int().min(1).max(100_000)).default(100),
    /** Largest message accepted (announced as SIZE; more gets 552 after the final dot). Default: scan.maxMessageSize. */
    maxMessageSize: byteSize.optional(),
    /** Messages with more Received: header fields than this are refused as looping (Postfix's hopcount_limit). */
    maxReceived: int.pipe(z.number().int().min(1).max(1000)).default(50),
    /** Text of the 550 5.7.1 reply for refused mail. {threats} and {msgId} are replaced. */
    rejectText: z.string().min(1).prefault('Message refused: {threats} ({msgId})'),
    /** Idle time allowed between client commands. */
    socketTimeout: duration.prefault('300s'),
    /** On shutdown, wait this long for transactions in flight, then 421 the rest. */
    shutdownTimeout: duration.prefault('30s'),
    /** Inbound STARTTLS: offered when both files are set. */
    tls: z
      .object({
        certFile: pathValue().optional(),
        keyFile: pathValue().optional(),
      })
      .strict()
      .prefault({}),
    /**
     * inline: answer the final dot only after the next hop accepted (sandgate never holds mail).
     * queue: accept into a durable queue (250 once on disk), then scan and deliver from it.
     */
    mode: z.enum(['inline', 'queue']).prefault('inline'),
    queue: relayQueueSchema.prefault({}),
    nextHopOptions: z
      .object({
        ...smtpDeliveryOptions,
        /** Connect, greeting and per-command timeout. */
        timeout: duration.prefault('60s'),
        /** Send NOOP to the next hop this often while a message is being scanned (0: never). */
        keepAlive: duration.prefault('60s'),
        /** Pass XFORWARD to the next hop when it offers it. */
        xforward: bool.default(true),
        /**
         * Pass the client on with XCLIENT when the next hop offers it (inline mode): the next hop
         * then applies its access rules (smtpd_client_restrictions, permit_mynetworks, ...) to the
         * original client instead of to sandgate. Off by default: that changes what the next hop
         * accepts, so an operator must choose it (and authorize us: smtpd_authorized_xclient_hosts).
         * Sent before each transaction; XFORWARD is the fallback when XCLIENT is refused.
         */
        xclient: bool.default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type RelayConfig = z.output<typeof relaySchema>;
export type RelayQueueConfig = z.output<typeof relayQueueSchema>;
