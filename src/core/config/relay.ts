import { z } from 'zod';
import { duration } from './durations.js';
import { hostPort, list } from './primitives.js';

/** The inline SMTP relay (`sandgate relay`). */
export const relaySchema = z
  .object({
    listen: hostPort.default({ host: '127.0.0.1', port: 10025 }),
    /** Where clean mail goes: the MTA's re-injection listener. */
    nextHop: hostPort.default({ host: '127.0.0.1', port: 10026 }),
    /** Greeting name; must differ from the next hop's (Postfix's loop check). */
    hostname: z.string().prefault('sandgate.localdomain'),
    /** Clients allowed to connect (CIDR or address). Never an open relay. */
    allowedClients: list(z.string()).default(['127.0.0.0/8', '::1/128']),
    /** Answer the final dot within this budget; below Postfix's smtp_data_done_timeout (600 s). */
    deadline: duration.prefault('300s'),
  })
  .strict();
