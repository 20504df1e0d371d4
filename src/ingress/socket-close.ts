/**
 * Responses queued behind another on a pipelining connection get no close event of their own when
 * the connection goes. This tells them, with one listener per socket however many wait on it (a
 * listener each would grow without bound with the pipelining depth an agent chooses).
 */
import type { Duplex } from 'node:stream';

const waiting = new WeakMap<Duplex, Set<() => void>>();

/** Calls `fn` once when `socket` closes; returns the function that stops waiting. */
export function whenSocketCloses(socket: Duplex, fn: () => void): () => void {
  let fns = waiting.get(socket);
  if (!fns) {
    const created = new Set<() => void>();
    fns = created;
    waiting.set(socket, created);
    socket.once('close', () => {
      waiting.delete(socket);
      for (const f of created) f();
    });
  }
  const own = fns;
  own.add(fn);
  return () => {
    own.delete(fn);
  };
}
