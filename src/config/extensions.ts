/**
 * File-name extensions (lower case, no dot) that several parts of sandgate reason about, defined
 * once: what the rules engine blocks by default, what counts as a program behind a double
 * extension, and what the PT Sandbox prefilter sends for analysis.
 */

/** Programs, scripts and disk images that run or mount when a Windows user opens them. */
export const WINDOWS_RUNNABLE_EXTENSIONS: readonly string[] = [
  'exe',
  'scr',
  'com',
  'pif',
  'bat',
  'cmd',
  'vbs',
  'vbe',
  'js',
  'jse',
  'wsf',
  'wsh',
  'hta',
  'cpl',
  'msi',
  'msp',
  'lnk',
  'jar',
  'ps1',
  'reg',
  'iso',
  'img',
  'vhd',
  'vhdx',
];

/** Everything that runs code when opened, on Windows or Unix: the target side of a double extension. */
export const EXECUTABLE_EXTENSIONS: readonly string[] = [
  ...WINDOWS_RUNNABLE_EXTENSIONS,
  'dll',
  'sys',
  'drv',
  'ocx',
  'so',
  'elf',
  'bin',
  'run',
  'sh',
  'app',
  'appx',
  'msix',
  'efi',
  'xll',
];
