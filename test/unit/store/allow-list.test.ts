import { allowListContract } from '../../contract/allow-list.js';
import { sqliteBackend } from './sqlite-backend.js';

allowListContract(sqliteBackend);
