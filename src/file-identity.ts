/**
 * What a path resolves to right now, as one comparable string: device, inode, size, mtime and
 * ctime of the file it names (following symlinks). A Kubernetes Secret or ConfigMap update swaps
 * the `..data` symlink to a new directory, an editor or `mv` replaces the inode, an in-place write
 * changes size or times: each gives a new identity, so a reader knows when to read the file again.
 */
import { type Stats, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';

const identityOf = (st: Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

export async function fileIdentity(path: string): Promise<string> {
  return identityOf(await stat(path));
}

/** The same, at start-up where nothing else runs yet. */
export function fileIdentitySync(path: string): string {
  return identityOf(statSync(path));
}
