/**
 * A URL as logs and messages show it: scheme, host, port and path. Never its user information or
 * query, which may carry credentials (`?access_token=`, `user:password@`).
 */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    return u.pathname === '/' ? u.origin : `${u.origin}${u.pathname}`;
  } catch {
    return '(a URL that does not parse)';
  }
}
