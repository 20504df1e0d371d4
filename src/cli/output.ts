/**
 * Whatever reads a command's output may go away (`| head`, a log collector that stopped). Writes
 * to it then fail with EPIPE, which would end the process with a stack trace: those are dropped,
 * and the command goes on (and cleans up) without its output.
 */
export function survivesClosedOutput(stream: NodeJS.WritableStream): void {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
  });
}
