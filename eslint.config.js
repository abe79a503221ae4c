import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Protocol libraries and network modules: the front ends' and adapters' business. */
const protocolModules = [
  'smtp-server',
  'nodemailer',
  'undici',
  'node:net',
  'node:http',
  'node:https',
  'node:tls',
  'net',
  'http',
  'https',
  'tls',
];
/** Storage drivers: only src/store speaks to a database. */
const storageDrivers = ['better-sqlite3', 'pg', 'pg-pool', 'pg-cursor'];
/** The file system: spools (src/mime), stores (src/store), the CLI and the front ends' per-message I/O. */
const fsModules = ['node:fs', 'node:fs/promises', 'fs', 'fs/promises'];
const banned = (names, message) => names.map((name) => ({ name, message }));
/**
 * Front ends (and the quarantine service) reach state only through the core's ports
 * (src/core/ports.ts); src/cli opens the stores and hands the ports in. durable-file.ts is a file
 * primitive (fsync, rename, fsync the directory), not state: the relay's directory next hop uses it.
 */
const storeBan = (self) => ({
  group: ['**/store/**', '!**/store/durable-file.js'],
  message: `src/${self} reaches state only through the core's ports (src/core/ports.ts): src/cli builds the stores`,
});

/**
 * Import boundaries (docs/architecture.md): cli -> (helper | smtp | milter | admin) -> core <-
 * (sandbox | store | mime | config). The verdict core imports no front end, adapter, config
 * loader, protocol library, storage driver or file-system module; the front doors never import
 * each other. A rule here is the architecture; CI enforces it.
 */
const frontDoor = (self, others) => ({
  files: [`src/${self}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        paths: banned(storageDrivers, `src/${self} reaches state only through the core's ports`),
        patterns: [
          {
            group: others.map((o) => `**/${o}/**`),
            message:
              'front doors never import each other: move what they share to src/core (pure) or src/mime',
          },
          storeBan(self),
        ],
      },
    ],
  },
});

/** A layer that uses state through the ports only, and no storage driver. */
const portsOnly = (self) => ({
  files: [`src/${self}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        paths: banned(storageDrivers, `src/${self} reaches state only through the core's ports`),
        patterns: [storeBan(self)],
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    // The verdict core stays free of protocol, storage and file-system modules and of every adapter.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...banned([...protocolModules, 'pino'], 'src/core must not import protocol libraries or pino'),
            ...banned(
              storageDrivers,
              'src/core must not import a storage driver (src/store implements its ports)',
            ),
            ...banned(
              fsModules,
              'src/core must not touch the file system (spools live in src/mime, files in src/store)',
            ),
          ],
          patterns: [
            {
              group: [
                '**/smtp/**',
                '**/helper/**',
                '**/milter/**',
                '**/sandbox/**',
                '**/store/**',
                '**/mime/**',
                '**/config/**',
                '**/cli/**',
                '**/quarantine/**',
                '**/admin/**',
              ],
              message: 'src/core must not depend on adapters, front ends or the config loader',
            },
          ],
        },
      ],
    },
  },
  frontDoor('helper', ['smtp', 'milter']),
  frontDoor('smtp', ['helper', 'milter']),
  frontDoor('milter', ['helper', 'smtp']),
  portsOnly('admin'),
  portsOnly('quarantine'),
  {
    // Adapters (scanners, spools, stores, config) do not reach up into front ends or the CLI.
    files: ['src/sandbox/**/*.ts', 'src/mime/**/*.ts', 'src/store/**/*.ts', 'src/config/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/smtp/**',
                '**/helper/**',
                '**/milter/**',
                '**/cli/**',
                '**/admin/**',
                '**/quarantine/**',
              ],
              message: 'adapters do not depend on front ends or the composition root',
            },
          ],
        },
      ],
    },
  },
  {
    // The SQLite adapter implements the core's async state ports with synchronous better-sqlite3
    // calls: its async methods answer with settled promises and have nothing to await.
    files: ['src/store/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  {
    files: ['src/cli/**/*.ts', 'bench/**', 'test/**'],
    rules: { 'no-console': 'off' },
  },
  {
    files: ['test/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
