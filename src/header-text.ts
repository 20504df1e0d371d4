/**
 * What an HTTP header value cannot carry as it is: C0 controls and DEL (a CR or LF would split the
 * header) and characters beyond Latin-1. Shared by the policy schema (a connector's format) and the
 * connectors (the rendered value).
 */
export const CONTROL = /[\u0000-\u001f\u007f]/;
export const NOT_LATIN1 = /[^\u0000-\u00ff]/;

export function headerCannotCarry(text: string): boolean {
  return CONTROL.test(text) || NOT_LATIN1.test(text);
}
