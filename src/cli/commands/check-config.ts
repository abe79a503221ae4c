import { stringify } from 'yaml';
import { describeError } from '../../core/errors.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { redactConfig } from '../load-config.js';

const HELP = `usage: sandgate check-config [--config FILE] [--set KEY=VALUE] [--json]

Validates the configuration (defaults, the YAML file, SANDGATE_* environment overrides, --set flags)
and prints the effective configuration with secrets redacted. Exit 0 when valid, 2 when not; errors
name the key path and, for keys from the file, the file and line.

A relative path in the file is read against the file's directory (from the environment or --set,
against the working directory); each one the file uses is named in a warning on stderr.`;

export function run(argv: string[], io: CliIo): Promise<number> {
  try {
    const { values } = parseCommandArgs(
      'check-config',
      argv,
      { ...CONFIG_OPTIONS, json: { type: 'boolean' } },
      false,
    );
    if (values.help) {
      writeLine(io.stdout, HELP);
      return Promise.resolve(EXIT.ok);
    }
    const { config, file, relativePaths } = loadConfigFromArgs(values, io);
    for (const r of relativePaths) {
      writeLine(
        io.stderr,
        `sandgate check-config: warning: ${r.key}: relative path "${r.value}" (${file ?? ''}${r.line !== undefined ? `:${r.line}` : ''}) ` +
          `is read against the file's directory: ${r.resolved}`,
      );
    }
    const shown = redactConfig(config);
    if (values.json) writeLine(io.stdout, JSON.stringify(shown, null, 2));
    else
      io.stdout.write(
        `# effective configuration${file ? ` (from ${file})` : ' (defaults)'}; secrets redacted\n${stringify(shown)}`,
      );
    return Promise.resolve(EXIT.ok);
  } catch (err) {
    writeLine(io.stderr, `sandgate check-config: ${describeError(err)}`);
    return Promise.resolve(EXIT.error);
  }
}
