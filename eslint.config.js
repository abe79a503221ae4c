import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const coreBanned = [
  'smtp-server',
  'nodemailer',
  'undici',
  'better-sqlite3',
  'pino',
  'node:net',
  'node:http',
  'node:https',
  'node:tls',
  'net',
  'http',
  'https',
  'tls',
];

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
    // The verdict core stays free of protocol and I/O libraries (style guide: one core, two front doors).
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: coreBanned.map((name) => ({
            name,
            message: 'src/core must not import protocol or I/O libraries',
          })),
          patterns: [
            {
              group: [
                '**/smtp/**',
                '**/helper/**',
                '**/milter/**',
                '**/sandbox/**',
                '**/store/**',
                '**/cli/**',
                '**/quarantine/**',
                '**/admin/**',
              ],
              message: 'src/core must not depend on adapters or front ends',
            },
          ],
        },
      ],
    },
  },
  // Front doors never import each other: what two of them share lives in src/core.
  ...[
    ['smtp', ['helper', 'milter']],
    ['helper', ['smtp', 'milter']],
    ['milter', ['smtp', 'helper']],
  ].map(([door, others]) => ({
    files: [`src/${door}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: others.map((o) => `**/${o}/**`),
              message: 'front ends never import each other: move what they share to src/core',
            },
          ],
        },
      ],
    },
  })),
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
