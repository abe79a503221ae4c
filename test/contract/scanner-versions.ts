/** Contract of the stored scanner versions (ScannerVersionStore). */
import { describe, expect, it } from 'vitest';
import type { StateBackend } from './backend.js';

export function scannerVersionsContract(backend: StateBackend): void {
  describe(`ScannerVersionStore (${backend.name})`, () => {
    it('put returns the version known before and stores the new one with its time', async () => {
      const { state } = await backend.open();
      const v = state.scannerVersions;
      expect(await v.get('pt-sandbox')).toBeUndefined();
      expect(await v.put('pt-sandbox', '5.11.0', 1000)).toBeUndefined();
      expect(await v.get('pt-sandbox')).toEqual({ version: '5.11.0', checkedAt: 1000 });
      expect(await v.put('pt-sandbox', '5.12.0', 2000)).toBe('5.11.0');
      expect(await v.get('pt-sandbox')).toEqual({ version: '5.12.0', checkedAt: 2000 });
      expect(await v.get('clamd')).toBeUndefined();
    });

    it('an older lookup does not replace a newer one (another process was faster)', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      await opened.state.scannerVersions.put('clamd', 'ClamAV 1.4.6/27001', 5000);
      expect(await other.scannerVersions.put('clamd', 'ClamAV 1.4.6/27000', 4000)).toBe('ClamAV 1.4.6/27001');
      expect(await opened.state.scannerVersions.get('clamd')).toEqual({
        version: 'ClamAV 1.4.6/27001',
        checkedAt: 5000,
      });
      // The same time again refreshes it.
      await other.scannerVersions.put('clamd', 'ClamAV 1.4.6/27002', 5000);
      expect((await opened.state.scannerVersions.get('clamd'))?.version).toBe('ClamAV 1.4.6/27002');
    });
  });
}
