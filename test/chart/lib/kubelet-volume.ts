/**
 * Writes ConfigMap/Secret volume contents the way the kubelet does (its "atomic writer"): the files
 * live in a timestamped directory, `..data` is a symlink to it, and every key is a symlink through
 * `..data`. Calling it again is an update: a new directory, and `..data` swapped with one rename.
 */
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

let counter = 0;

export function writeVolume(dir: string, files: Record<string, string>, mode = 0o644): void {
  mkdirSync(dir, { recursive: true });
  const stamp = `..${new Date().toISOString().replace(/[-:.TZ]/g, '_')}${++counter}`;
  mkdirSync(join(dir, stamp));
  for (const [key, text] of Object.entries(files)) writeFileSync(join(dir, stamp, key), text, { mode });
  symlinkSync(stamp, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const key of Object.keys(files)) {
    try {
      symlinkSync(join('..data', key), join(dir, key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

