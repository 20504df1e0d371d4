/** Just enough of RFC 6455 for tests: the accept key, and small frames both ways. */
import { createHash, randomBytes } from 'node:crypto';

export const OP_TEXT = 0x1;
export const OP_CLOSE = 0x8;

export function wsAccept(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

export function wsKey(): string {
  return randomBytes(16).toString('base64');
}

/** One final frame; clients must mask, servers must not. Payloads under 64 KiB. */
export function encodeFrame(opcode: number, payload: Buffer | string, mask: boolean): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const lenBytes = data.length < 126 ? 0 : 2;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = 0x80 | opcode;
  head[1] = (mask ? 0x80 : 0) | (lenBytes === 0 ? data.length : 126);
  if (lenBytes === 2) head.writeUInt16BE(data.length, 2);
  if (!mask) return Buffer.concat([head, data]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const body = Buffer.from(data);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i % 4];
  return Buffer.concat([head, body]);
}

export interface Frame {
  opcode: number;
  payload: Buffer;
}

/** Accumulates bytes and yields complete frames (masked or not). */
export class FrameReader {
  #buf = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        throw new Error('test frames are small');
      }
      const masked = (b[1] & 0x80) !== 0;
      const keyOff = off;
      if (masked) off += 4;
      if (b.length < off + len) break;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= b[keyOff + (i % 4)];
      frames.push({ opcode: b[0] & 0x0f, payload });
      this.#buf = b.subarray(off + len);
    }
    return frames;
  }
}
