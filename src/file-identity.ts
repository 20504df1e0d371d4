/**
 * What a path resolves to right now, as one comparable string: device, inode, size, mtime and
 * ctime of the file it names (following symlinks). A Kubernetes Secret or ConfigMap update swaps
 * the `..data` symlink to a new directory, an editor or `mv` replaces the inode, an in-place write
 * changes size or times: each gives a new identity, so a reader knows when to read the file again.
 * readNamedFile reads such a file whole, with an error that says which file it is and why it failed.
 */
import { readFileSync, type Stats, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { errorReason } from './errors.js';

const identityOf = (st: Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

export async function fileIdentity(path: string): Promise<string> {
  return identityOf(await stat(path));
}

/** The same, at start-up where nothing else runs yet. */
export function fileIdentitySync(path: string): string {
  return identityOf(statSync(path));
}

/** A file read whole at start or on a change; the error names what it is, the path and why. */
export function readNamedFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${what} ${file} cannot be read: ${errorReason(e)}`);
  }
}
