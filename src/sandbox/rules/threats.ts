/** Threat names the rules scanner reports: stable, documented in docs/rules.md. */
export const Threats = {
  eicar: 'Sandgate.Test.EICAR',
  blockedExtension: 'Sandgate.Attachment.BlockedExtension',
  doubleExtension: 'Sandgate.Attachment.DoubleExtension',
  disguisedExecutable: 'Sandgate.Attachment.DisguisedExecutable',
  blockedHash: 'Sandgate.Hash.Blocked',
  macro: 'Sandgate.Office.Macro',
  archiveBomb: 'Sandgate.Archive.Bomb',
  tooManyParts: 'Sandgate.Mime.TooManyParts',
  malformed: 'Sandgate.Mime.Malformed',
  /** A parser ambiguity (duplicate fields, boundary tricks, a control character in a name, ...). */
  ambiguous: 'Sandgate.Mime.Ambiguous',
  /** Content a mail client may decode that the walker does not: multi-part yEnc, BinHex. */
  undecoded: 'Sandgate.Mime.Undecoded',
} as const;

/** The EICAR test string (https://www.eicar.org), kept encoded so this source file is not itself flagged. */
export const EICAR = Buffer.from(
  'WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=',
  'base64',
);
