export { QuarantineService } from './service.js';
export { RetentionJob } from './retention.js';
export { NotifyingQuarantine } from './notify.js';
