import { scannerVersionsContract } from '../../contract/scanner-versions.js';
import { sqliteBackend } from './sqlite-backend.js';

scannerVersionsContract(sqliteBackend);
