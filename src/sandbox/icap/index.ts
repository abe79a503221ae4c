export { IcapScanner, type IcapScannerOptions } from './scanner.js';
