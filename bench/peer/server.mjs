// The peer bench/all.py measures this service against: oidc-provider, configured like the
// service as `make serve` runs it. Started by bench/peer_bench.py, never by hand:
//
//   PEER_PORT      loopback port; issuer https://localhost:PEER_PORT behind plain HTTP with
//                  X-Forwarded-Proto trusted (provider.proxy = true), as the service behind
//                  its TLS proxy (IDP_TRUSTED_PROXIES)
//   PEER_WORKERS   worker processes (node:cluster), 2 as the service's granian workers
//   PEER_CONFIG    JSON: {jwk: RSA private JWK, service: {id, secret}, web: {id, secret},
//                  introspect_token, userinfo_token, grant_id, cookie_key}
//   PEER_REDIS_URL, PEER_REDIS_PREFIX
//                  when set, its storage in Redis (redis_adapter.mjs) instead of each
//                  worker's memory: for the refresh and code flow runs, where a token issued by
//                  one worker is presented to the other
//
// What it serves, as the service does: RS256 signing; a confidential client allowed
// client_credentials with client_secret_basic, whose access token is an RS256 JWT (a default
// resource server with accessTokenFormat "jwt"; without one oidc-provider issues opaque
// tokens); introspection; userinfo. oidc-provider refuses to introspect JWTs (they are
// self-contained by its design) and its tokens live in the adapter of one process (the
// in-memory default): each worker stores the same two opaque tokens at start, one
// client-credentials token for introspection and one access token with "openid" (and its
// grant) for userinfo, so that either worker answers them.
//
// For the code flow and refresh runs, as the service: the web client gets a refresh token
// with every code (the service issues one without offline_access) and a new one at each
// refresh (rotation); PKCE S256. Signing in is an interaction that this server completes at
// once for the account "bench" (login and consent of the scopes asked), so that a client
// thread gets a session the way a browser would, then reuses it.
import cluster from 'node:cluster';
import process from 'node:process';

import Provider from 'oidc-provider';

import redisAdapter from './redis_adapter.mjs';

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
    adapter: process.env.PEER_REDIS_URL
      ? redisAdapter(process.env.PEER_REDIS_URL, process.env.PEER_REDIS_PREFIX || 'peer:')
      : undefined,
    cookies: { keys: [config.cookie_key] },
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
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: {
      ClientCredentials: 600,
      AccessToken: 600,
      AuthorizationCode: 60,
      RefreshToken: 3600,
      IdToken: 600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
    },
  });
  provider.proxy = true; // X-Forwarded-Proto from the (absent) TLS proxy, as the service

  // Signing in: the interaction is completed at once, for "bench", with the scopes asked.
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || !ctx.path.startsWith('/interaction/')) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: account.sub, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    ctx.respond = false;
    return provider.interactionFinished(
      ctx.req,
      ctx.res,
      { login: { accountId: account.sub }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  });

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
