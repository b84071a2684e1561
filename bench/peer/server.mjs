// The peer bench/all.py measures this service against: oidc-provider, configured like the
// service as `make serve` runs it. Started by bench/peer_bench.py, never by hand:
//
//   PEER_PORT      loopback port; issuer https://localhost:PEER_PORT behind plain HTTP with
//                  X-Forwarded-Proto trusted (provider.proxy = true), as the service behind
//                  its TLS proxy (IDP_TRUSTED_PROXIES)
//   PEER_WORKERS   worker processes (node:cluster), 2 as the service's granian workers
//   PEER_CONFIG    JSON: {jwk: RSA private JWK, service: {id, secret}, web: {id, secret},
//                  introspect_token, userinfo_token, grant_id}
//
// What it serves, as the service does: RS256 signing; a confidential client allowed
// client_credentials with client_secret_basic, whose access token is an RS256 JWT (a default
// resource server with accessTokenFormat "jwt"; without one oidc-provider issues opaque
// tokens); introspection; userinfo. oidc-provider refuses to introspect JWTs (they are
// self-contained by its design) and its tokens live in the adapter of one process (the
// in-memory default): each worker stores the same two opaque tokens at start, one
// client-credentials token for introspection and one access token with "openid" (and its
// grant) for userinfo, so that either worker answers them.
import cluster from 'node:cluster';
import process from 'node:process';

import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT);
const workers = Number(process.env.PEER_WORKERS || 2);
const config = JSON.parse(process.env.PEER_CONFIG || '{}');

if (!port || !config.jwk || !config.service) {
  console.error('server.mjs: PEER_PORT and PEER_CONFIG are set by bench/peer_bench.py');
  process.exit(2);
}

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const issuer = `https://localhost:${port}`;
  const resource = `${issuer}/api`;
  const account = {
    sub: 'bench',
    email: 'bench@example.com',
    email_verified: true,
    preferred_username: 'bench',
    name: 'bench',
  };

  const provider = new Provider(issuer, {
    jwks: { keys: [{ ...config.jwk, alg: 'RS256', use: 'sig' }] },
    clients: [
      {
        client_id: config.service.id,
        client_secret: config.service.secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: config.web.id,
        client_secret: config.web.secret,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['https://app.example/callback'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    findAccount: (ctx, sub) => (sub === account.sub
      ? { accountId: sub, claims: () => account }
      : undefined),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // As the service: an app learns about its own tokens only.
        allowedPolicy: (ctx, client, token) => token.clientId === client.clientId,
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: '',
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: { ClientCredentials: 600, AccessToken: 600, Grant: 3600 },
  });
  provider.proxy = true; // X-Forwarded-Proto from the (absent) TLS proxy, as the service

  // The opaque tokens of the introspection and userinfo runs (see the top).
  const grant = new provider.Grant({
    jti: config.grant_id,
    accountId: account.sub,
    clientId: config.web.id,
  });
  grant.addOIDCScope('openid profile email');
  await grant.save(3600);
  const fixed = [
    new provider.AccessToken({
      jti: config.userinfo_token,
      accountId: account.sub,
      clientId: config.web.id,
      grantId: config.grant_id,
      scope: 'openid profile email',
    }),
    new provider.ClientCredentials({ jti: config.introspect_token, clientId: config.service.id }),
  ];
  for (const token of fixed) {
    token.format = 'opaque'; // set when the provider draws the id; here the id is given
    await token.save(); // eslint-disable-line no-await-in-loop
  }

  provider.listen(port, '127.0.0.1');
}
