import { clusterContract } from '../../contract/cluster.js';
import { sqliteBackend } from './sqlite-backend.js';

clusterContract(sqliteBackend);
