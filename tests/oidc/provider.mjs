// A real OpenID Connect provider for the station's sign-in tests:
// node's oidc-provider (installed by scripts/test.sh into
// target/oidc-provider), on 127.0.0.1, with its development login and
// consent pages, which the tests fill in over HTTP.
//
// Environment:
//   OIDC_MODULES   the node_modules folder oidc-provider is installed in
//   OIDC_PORT      the port to listen on
//   OIDC_SECRET    the station client's secret
//   OIDC_REDIRECT  the station client's redirect URI
//   OIDC_ATTACK    test-only: rewrite the ID token of every /token answer:
//                  "tampered" (one character of its signature changed),
//                  "audience" (re-signed with this provider's key for
//                  another client), "expired" (re-signed, expired an
//                  hour ago); unset: left alone.
//
// Accounts: "sam" (sam@plant.example, groups line-supervisors and
// everyone) and "nora" (nora@plant.example, group everyone). Any
// password is accepted (the development login page).
//
// Prints "ready <issuer>" on stdout once it listens.

import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.OIDC_MODULES;
const load = (path) => import(pathToFileURL(join(modules, path)).href);
const { default: Provider } = await load('oidc-provider/lib/index.js');
const jose = await load('jose/dist/webapi/index.js');

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const attack = process.env.OIDC_ATTACK || '';

// Signing keys made at start, never written anywhere.
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

const accounts = {
  sam: { email: 'sam@plant.example', name: 'Sam Supervisor', groups: ['line-supervisors', 'everyone'] },
  nora: { email: 'nora@plant.example', name: 'Nora Nobody', groups: ['everyone'] },
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'station',
      client_secret: process.env.OIDC_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
    {
      client_id: 'other-app',
      client_secret: 'other-app-secret',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // The claims of the granted scopes go into the ID token itself.
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => {
    const a = accounts[id];
    if (!a) return undefined;
    return {
      accountId: id,
      claims: async () => ({ sub: id, preferred_username: id, email_verified: true, ...a }),
    };
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['oidc-provider test cookie key'] },
});

// The test-only rewrite of the token endpoint's answer.
const b64 = (s) => Buffer.from(s, 'base64url');
provider.use(async (ctx, next) => {
  await next();
  if (!attack || ctx.path !== '/token' || !ctx.body || !ctx.body.id_token) return;
  const [h, p, s] = ctx.body.id_token.split('.');
  let token;
  if (attack === 'tampered') {
    const i = Math.floor(s.length / 2);
    token = `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
  } else {
    const claims = JSON.parse(b64(p).toString());
    if (attack === 'audience') claims.aud = 'other-app';
    if (attack === 'expired') {
      const now = Math.floor(Date.now() / 1000);
      claims.iat = now - 7200;
      claims.exp = now - 3600;
    }
    token = await new jose.SignJWT(claims)
      .setProtectedHeader(JSON.parse(b64(h).toString()))
      .sign(privateKey);
  }
  ctx.body = { ...ctx.body, id_token: token };
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
