/**
 * What a path resolves to right now, as one comparable string: device, inode, size, mtime and
 * ctime of the file it names (following symlinks). A Kubernetes Secret or ConfigMap update swaps
 * the `..data` symlink to a new directory, an editor or `mv` replaces the inode, an in-place write
 * changes size or times: each gives a new identity, so a reader knows when to read the file again.
 */
import { stat } from 'node:fs/promises';

export async function fileIdentity(path: string): Promise<string> {
  const st = await stat(path);
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}
