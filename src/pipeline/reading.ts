/**
 * The request of each agent connection whose body may still be arriving: the last one with a body
 * whose head was read (requests without one are not registered). When the HTTP parser then fails (a malformed chunk, say), the failure is that request's:
 * it gets the refusal under its own request id, as its one decision, not a second made-up one.
 */
import type { ServerResponse } from 'node:http';
import type { SidecarError } from '../errors.js';

export interface ReadingRequest {
  requestId: string;
  res: ServerResponse;
  /** Its body was read to the end: a parser failure after that is a later request's. */
  complete(): boolean;
  /** Marks the request refused for `err` (its record says so once it is done). */
  refuse(err: SidecarError): void;
}

const reading = new WeakMap<object, ReadingRequest>();

export function startReading(socket: object, r: ReadingRequest): void {
  reading.set(socket, r);
}

export function stopReading(socket: object, r: ReadingRequest): void {
  if (reading.get(socket) === r) reading.delete(socket);
}

/** The request whose body was being read on `socket` when its parser failed, if any. */
export function readingOn(socket: object): ReadingRequest | undefined {
  const r = reading.get(socket);
  return r === undefined || r.complete() ? undefined : r;
}
