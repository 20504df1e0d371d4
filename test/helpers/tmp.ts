/**
 * Temporary directories for tests. Each is removed when the test process exits (tap runs every
 * file in a process of its own), after the file's own teardowns and closes, so a test may still
 * read its audit log after closing its sidecar. AGENTWRIT_TEST_KEEP_DIRS=1 keeps them for a look.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const created: string[] = [];
let hooked = false;

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  created.push(dir);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      if (process.env.AGENTWRIT_TEST_KEEP_DIRS === '1') return;
      for (const d of created) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}
