/**
 * Where secrets come from: an environment variable or a file. A policy file only names the source.
 *
 * File secrets follow rotation the way Kubernetes updates a mounted Secret (a new directory, then
 * an atomic swap of the `..data` symlink): the value is cached with the identity of the file the
 * path resolves to (device, inode, size, mtime, ctime) and that identity is re-checked at most once
 * per second; a changed identity means the file is read again. One trailing newline ("\n" or
 * "\r\n") is removed, since `echo` and most editors add one; nothing else is trimmed.
 *
 * Errors are SidecarError connector_unavailable with a detail safe for the agent; the operator's
 * explanation (which variable or file, why) is the error's `cause`. Neither ever holds the value.
 */
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { SecretSourceInput } from '../config/schema.js';
import { errorReason, SidecarError } from '../errors.js';
import { fileIdentity } from '../file-identity.js';

export interface SecretReader {
  /** The current value; cheap when unchanged. Rejects with connector_unavailable. */
  read(): Promise<string>;
  /** The value read() would resolve with at once, when no check is due; undefined otherwise. */
  peek(): string | undefined;
  /** "env NAME" or "file /path": never the value. */
  describe(): string;
}

/** How long a file's identity is trusted before it is checked again. */
export const SECRET_RECHECK_MS = 1000;

const AGENT_DETAIL = 'the upstream credential is unavailable';

export function secretUnavailable(operatorMessage: string, cause?: unknown): SidecarError {
  const why = new Error(operatorMessage, cause === undefined ? undefined : { cause });
  return new SidecarError('connector_unavailable', AGENT_DETAIL, { cause: why });
}

/** The operator-facing explanation of a secret or connector failure (never holds a value). */
export function explainFailure(e: unknown): string {
  if (e instanceof SidecarError && e.cause instanceof Error) return e.cause.message;
  return e instanceof Error ? e.message : String(e);
}

class EnvSecret implements SecretReader {
  private value: string | undefined;
  constructor(
    private readonly name: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  describe(): string {
    return `env ${this.name}`;
  }

  peek(): string | undefined {
    return this.value;
  }

  read(): Promise<string> {
    // The environment does not change under a running process: read once, then serve the copy.
    if (this.value === undefined) {
      const v = this.env[this.name];
      if (v === undefined || v.trim() === '') {
        return Promise.reject(secretUnavailable(`environment variable ${this.name} is not set, empty or only whitespace`));
      }
      this.value = v;
    }
    return Promise.resolve(this.value);
  }
}

interface FileState {
  identity: string;
  value: string;
}

/** A Kubernetes Secret holds at most 1 MiB; a credential file larger than that is not one. */
export const MAX_SECRET_FILE_BYTES = 1024 * 1024;

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Reads the file, but never more than `max` bytes of it: a larger file is refused unread. */
async function readCapped(path: string, max: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > max) throw new Error(`the file is larger than ${max} bytes`);
    }
    try {
      return STRICT_UTF8.decode(buf.subarray(0, n));
    } catch {
      // Read as UTF-8 anyway, a bad byte would go out as U+FFFD: a wrong credential, not a refusal.
      throw new Error('the file is not valid UTF-8 (written in another encoding, or cut in the middle of a character)');
    }
  } finally {
    await fh.close();
  }
}

function stripOneNewline(s: string): string {
  if (s.endsWith('\r\n')) return s.slice(0, -2);
  if (s.endsWith('\n')) return s.slice(0, -1);
  return s;
}

class FileSecret implements SecretReader {
  private state: FileState | undefined;
  private checkedAt = 0;
  private inflight: Promise<string> | undefined;

  constructor(private readonly path: string) {}

  describe(): string {
    return `file ${this.path}`;
  }

  peek(): string | undefined {
    return this.state && Date.now() - this.checkedAt < SECRET_RECHECK_MS ? this.state.value : undefined;
  }

  read(): Promise<string> {
    const fresh = this.peek();
    if (fresh !== undefined) return Promise.resolve(fresh);
    // One stat at a time, shared by every request that finds the check due.
    this.inflight ??= this.refresh().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async refresh(): Promise<string> {
    try {
      const identity = await fileIdentity(this.path);
      if (this.state?.identity !== identity) {
        const value = stripOneNewline(await readCapped(this.path, MAX_SECRET_FILE_BYTES));
        if (value.trim() === '') throw new Error(value === '' ? 'the file is empty' : 'the file holds only whitespace');
        this.state = { identity, value };
      }
      this.checkedAt = Date.now();
      return this.state.value;
    } catch (e) {
      // A secret that disappeared is not served from memory any longer.
      this.state = undefined;
      const code = (e as NodeJS.ErrnoException).code;
      throw secretUnavailable(`secret file ${this.path} cannot be read (${errorReason(e)})`, code ? undefined : e);
    }
  }
}

export function createSecretReader(src: SecretSourceInput, baseDir: string, env: NodeJS.ProcessEnv = process.env): SecretReader {
  if ('env' in src) return new EnvSecret(src.env, env);
  return new FileSecret(resolve(baseDir, src.file));
}
