import { verdictCacheContract } from '../../contract/verdict-cache.js';
import { sqliteBackend } from './sqlite-backend.js';

verdictCacheContract(sqliteBackend);
