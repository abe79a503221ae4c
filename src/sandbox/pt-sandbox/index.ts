export { PtSandboxClient } from './client.js';
export { PtSandboxScanner } from './scanner.js';
export type { LoadPort, TaskStorePort } from './task-runner.js';
