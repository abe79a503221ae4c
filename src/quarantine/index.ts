export { SqliteAllowList, type AllowList } from '../store/allow-list.js';
export { QuarantineService } from './service.js';
export { RetentionJob } from './retention.js';
export { NotifyingQuarantine } from './notify.js';
