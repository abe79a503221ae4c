export { PtSandboxClient } from './client.js';
export { PtSandboxScanner } from './scanner.js';
export type { LoadPort } from './task-runner.js';
