import { z } from 'zod';

/**
 * Shapes of the PT Sandbox public API replies we rely on (docs/pt-sandbox.md, reference §2-§3).
 * Replies are untrusted: parsed with zod, unknown fields ignored, missing optional fields tolerated.
 */

export const resultErrorSchema = z
  .object({ type: z.string().optional(), message: z.string().optional() })
  .loose();

export const scanResultSchema = z
  .object({
    scan_state: z.string().optional(),
    verdict: z.string().optional(),
    threat: z.string().optional(),
    duration: z.number().optional(),
    duration_full: z.number().optional(),
    errors: z.array(resultErrorSchema).optional(),
  })
  .loose();
export type ScanResult = z.output<typeof scanResultSchema>;

export const uploadDataSchema = z.object({ file_uri: z.string().min(1), ttl: z.number().optional() }).loose();
export const scanIdDataSchema = z.object({ scan_id: z.string().min(1) }).loose();
export const taskStatusDataSchema = z
  .object({
    scan_id: z.string().optional(),
    result: scanResultSchema.optional(),
    is_preflight: z.boolean().optional(),
  })
  .loose();
export type TaskStatus = z.output<typeof taskStatusDataSchema>;

/** One node of the report tree: detections hang off engine_results, children under artifacts. */
export interface ReportNode {
  readonly type?: string;
  readonly result?: ScanResult;
  readonly engine_results?: readonly {
    readonly detections?: readonly { detect?: string; threat?: string }[];
  }[];
  readonly artifacts?: readonly ReportNode[];
}
export const reportDataSchema = z
  .object({
    scan_id: z.string().optional(),
    result: scanResultSchema.optional(),
    artifacts: z.array(z.unknown()).optional(),
  })
  .loose();

export const healthDataSchema = z.object({ status: z.string() }).loose();
export const versionDataSchema = z.object({ version: z.string(), edition: z.string().optional() }).loose();
export const imagesDataSchema = z.array(
  z
    .object({
      image_id: z.string(),
      version: z.string().optional(),
      type: z.string().optional(),
      os: z
        .object({
          name: z.string().optional(),
          version: z.string().optional(),
          architecture: z.string().optional(),
        })
        .loose()
        .optional(),
    })
    .loose(),
);
export type SandboxImage = z.output<typeof imagesDataSchema>[number];

/** Body of /analysis/createScanTask (absent fields are omitted, never null). */
export interface CreateScanTaskBody {
  file_uri: string;
  file_name?: string;
  async_result: true;
  short_result: true;
  priority?: number;
  options?: {
    analysis_depth?: number;
    passwords_for_unpack?: string[];
    cache_enabled?: boolean;
    url_extract_enabled?: boolean;
    sandbox?: { enabled: boolean; image_id?: string; analysis_duration?: number };
  };
}

/** Query of /scan/checkFile. */
export interface CheckFileQuery {
  file_name?: string;
  priority?: number;
  passwords_for_unpack?: readonly string[];
}

/** Which endpoint family created (and therefore polls) a task. */
export type TaskMode = 'analysis' | 'source';
