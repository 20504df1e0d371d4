import t from 'tap';
import { parseScope, scopeCovers } from '../../src/auth/scope.js';
import { fillScope, parseScopeTemplate, type ScopeTemplate } from '../../src/policy/template.js';
import { compileFrom, request, routesFile } from './fixtures/policy.js';

function template(s: string, params: string[]): ScopeTemplate {
  const r = parseScopeTemplate(s, new Set(params));
  if (Array.isArray(r)) throw new Error(r.join('; '));
  return r;
}

t.test('filling scope templates, hostile values included', async (t) => {
  // [template, params, filled scope, problem pattern or undefined]
  const cases: Array<[string, Record<string, string>, string, RegExp | undefined]> = [
    ['read:billing:customer-{c}', { c: '12345' }, 'read:billing:customer-12345', undefined],
    ['read:billing:customer-{c}', { c: '*' }, 'read:billing:customer-*', undefined],
    ['read:billing:{c}', { c: '*' }, 'read:billing:*', /identifier would be the wildcard/],
    ['read:billing:*', {}, 'read:billing:*', undefined],
    ['read:billing:{c}', { c: 'a:b' }, 'read:billing:a:b', undefined],
    ['read:billing:{c}', { c: 'x:read:billing:*' }, 'read:billing:x:read:billing:*', undefined],
    ['read:{r}:x', { r: 'a:b' }, 'read:a:b:x', /\{r\} contains ":" .* resource/],
    ['read:{r}:x', { r: '*' }, 'read:*:x', /resource would be the wildcard/],
    ['read:{r}-data:x', { r: '*' }, 'read:*-data:x', undefined],
    ['{a}:data:x', { a: 'read:data' }, 'read:data:data:x', /\{a\} contains ":" .* action/],
    ['{a}:data:x', { a: '*' }, '*:data:x', /action would be the wildcard/],
    ['*:data:{c}', { c: 'x' }, '*:data:x', undefined],
    ['{a}:{r}:{c}', { a: 'read', r: 'files', c: 'docs/readme' }, 'read:files:docs/readme', undefined],
    ['read:{c}{c}:x', { c: 'ab' }, 'read:abab:x', undefined],
  ];
  for (const [tpl, params, scope, problem] of cases) {
    const names = Object.keys(params);
    const f = fillScope(template(tpl, names.length ? names : []), params);
    t.equal(f.scope, scope, `${tpl} ${JSON.stringify(params)}`);
    if (problem) t.match(f.problem, problem, `${tpl} ${JSON.stringify(params)} refused`);
    else t.equal(f.problem, undefined, `${tpl} ${JSON.stringify(params)} allowed`);
  }
});

t.test('a filled scope never gains parts: identifier keeps the colons', async (t) => {
  const f = fillScope(template('read:billing:{c}', ['c']), { c: 'a:b:c' });
  t.same(parseScope(f.scope), { action: 'read', resource: 'billing', identifier: 'a:b:c' });
  // A grant of read:billing:a cannot cover what the request asked for.
  t.notOk(scopeCovers('read:billing:a', f.scope));
});

t.test('template parse errors', async (t) => {
  const cases: Array<[string, string[], RegExp]> = [
    ['read:billing', [], /not of the form/],
    ['read:billing:', [], /not of the form/],
    [':billing:x', [], /not of the form/],
    ['read:billing:{nope}', ['c'], /\{nope\} is not a parameter/],
    ['read:billing:{c', ['c'], /unmatched "\{"/],
    ['read:billing:c}', ['c'], /unmatched "\}"/],
    ['read:billing:{}', ['c'], /not a parameter reference/],
    ['read:billing:{c*}', ['c'], /not a parameter reference/],
    ['read:billing:{a-b}', ['c'], /not a parameter reference/],
  ];
  for (const [tpl, params, re] of cases) {
    const r = parseScopeTemplate(tpl, new Set(params));
    t.ok(Array.isArray(r), tpl);
    t.match((r as string[]).join('; '), re, tpl);
  }
  // Placeholders cannot move the colon split: the template is split before substitution.
  const ok = template('read:{r}:{c}', ['r', 'c']);
  t.equal(ok.constant, undefined);
  t.equal(template('read:billing:*', []).constant, 'read:billing:*');
});

t.test('through the matcher: decoded values, problems reported, scopes still shown', async (t) => {
  const policy = compileFrom({
    'p.yaml': routesFile(
      `  - id: by-id\n    host: h.example\n    path: /c/{c}\n    scopes: ["read:billing:{c}"]\n` +
        `  - id: by-res\n    host: h.example\n    path: /r/{r}/{c}\n    scopes: ["read:{r}:{c}", "audit:log:{c}"]\n`,
    ),
  });
  const cases: Array<[string, string[], RegExp | undefined]> = [
    ['http://h.example/c/42', ['read:billing:42'], undefined],
    ['http://h.example/c/%2A', ['read:billing:*'], /wildcard/],
    ['http://h.example/c/*', ['read:billing:*'], /wildcard/],
    ['http://h.example/c/a:b', ['read:billing:a:b'], undefined],
    ['http://h.example/c/a%3Ab', ['read:billing:a:b'], undefined],
    ['http://h.example/r/files/x', ['read:files:x', 'audit:log:x'], undefined],
    ['http://h.example/r/a:b/x', ['read:a:b:x', 'audit:log:x'], /contains ":"/],
    ['http://h.example/r/a%3Ab/x', ['read:a:b:x', 'audit:log:x'], /contains ":"/],
    ['http://h.example/r/%2a/x', ['read:*:x', 'audit:log:x'], /wildcard/],
    ['http://h.example/r/files/%2A', ['read:files:*', 'audit:log:*'], /wildcard/],
  ];
  for (const [url, scopes, problem] of cases) {
    const m = policy.matcher.match(request(policy, 'GET', url));
    t.same(m?.requiredScopes, scopes, url);
    if (problem) t.match(m?.scopeProblem, problem, `${url} cannot be authorized`);
    else t.equal(m?.scopeProblem, undefined, `${url} can be authorized`);
  }
});
