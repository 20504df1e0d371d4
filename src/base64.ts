/**
 * Padded standard base64 (RFC 4648 §4) and nothing else. Node's decoder on its own skips
 * characters outside the alphabet and takes base64url letters, so two different texts could read
 * as the same bytes.
 */
export function decodePaddedBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}
