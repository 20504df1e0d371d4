/**
 * Obtains an agent token from an AgentWrit broker over its documented HTTP API, the way an agent
 * does: admin auth -> launch token -> challenge -> register with a fresh Ed25519 key.
 */
import { generateKeyPairSync, sign } from 'node:crypto';

async function call<T>(url: string, init: { method?: string; token?: string; body?: unknown }): Promise<T> {
  const res = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { 'content-type': 'application/json', ...(init.token ? { authorization: `Bearer ${init.token}` } : {}) },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  if (!res.ok) throw new Error(`${init.method ?? 'call'} ${new URL(url).pathname} answered ${res.status}`);
  return (await res.json()) as T;
}

export async function agentToken(brokerUrl: string, adminSecret: string, scopes: string[]): Promise<string> {
  const base = brokerUrl.replace(/\/$/, '');
  const admin = await call<{ access_token: string }>(`${base}/v1/admin/auth`, { body: { secret: adminSecret } });
  const launch = await call<{ launch_token: string }>(`${base}/v1/admin/launch-tokens`, {
    token: admin.access_token,
    body: { agent_name: 'chart-test-agent', allowed_scope: scopes, max_ttl: 300 },
  });
  const { nonce } = await call<{ nonce: string }>(`${base}/v1/challenge`, {});
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const rawPublic = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const signature = sign(null, Buffer.from(nonce, 'hex'), privateKey);
  const reg = await call<{ access_token: string }>(`${base}/v1/register`, {
    body: {
      launch_token: launch.launch_token,
      nonce,
      public_key: rawPublic.toString('base64'),
      signature: signature.toString('base64'),
      orch_id: 'chart-test',
      task_id: 'boot',
      requested_scope: scopes,
    },
  });
  return reg.access_token;
}
