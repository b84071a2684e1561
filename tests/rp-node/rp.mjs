// A relying party not written in Python: openid-client (npm) against the provider, driven
// by tests/test_node_rp.py. TLS is verified as usual: NODE_EXTRA_CA_CERTS names the test CA.
//
// Environment: ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI (and NODE_EXTRA_CA_CERTS).
// stdout, line 1: {"authorization_url": ...} (PKCE S256, state, nonce)
// stdin, line 1:  the callback URL the browser was sent to (code, state, iss)
// stdout, line 2: {"id_token_claims", "userinfo", "refresh_rotated", ...}
// Any failure: a message on stderr and exit status 1 (2 for a missing variable).

import { webcrypto } from "node:crypto";
import { createInterface } from "node:readline";

// openid-client v6 needs Web Crypto as a global; Node.js 18 (Debian 12's nodejs) has it
// only behind a flag.
globalThis.crypto ??= webcrypto;
const client = await import("openid-client");

function fail(step, error) {
  const lines = [`rp.mjs: ${step} failed: ${error?.name ?? "Error"}: ${error?.message ?? error}`];
  if (error?.code) lines.push(`  code: ${error.code}`);
  if (error?.error) lines.push(`  error: ${error.error} ${error.error_description ?? ""}`);
  if (error?.status) lines.push(`  HTTP status: ${error.status}`);
  // fetch errors say "fetch failed" and keep the reason (TLS, refused...) in the cause.
  for (let cause = error?.cause, depth = 0; cause && depth < 5; cause = cause.cause, depth++) {
    const text =
      cause instanceof Error
        ? `${cause.name}: ${cause.message}`
        : JSON.stringify(cause, (key, value) =>
            value instanceof URLSearchParams || value instanceof Headers
              ? Object.fromEntries(value)
              : value,
          );
    lines.push(`  cause: ${cause?.code ? `[${cause.code}] ` : ""}${text}`);
  }
  process.stderr.write(lines.join("\n") + "\n");
  process.exit(1);
}

async function step(name, action) {
  try {
    return await action();
  } catch (error) {
    fail(name, error);
  }
}

function env(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`rp.mjs: environment variable ${name} is not set\n`);
    process.exit(2);
  }
  return value;
}

function readLine() {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    rl.once("line", (line) => {
      resolve(line.trim()); // before close(), which emits "close" at once
      rl.close();
    });
    rl.once("close", () => reject(new Error("stdin closed before the callback URL came")));
  });
}

const issuer = env("ISSUER");
const clientId = env("CLIENT_ID");
const clientSecret = env("CLIENT_SECRET");
const redirectUri = env("REDIRECT_URI");
const scope = process.env.SCOPE || "openid profile email";

// Discovery checks that the document's issuer is ISSUER. Non-repudiation checks make
// openid-client verify the ID token's signature against the provider's JWKS too (by
// default it relies on TLS for tokens from the token endpoint).
const config = await step("discovery", () =>
  client.discovery(
    new URL(issuer),
    clientId,
    { redirect_uris: [redirectUri], response_types: ["code"] },
    client.ClientSecretBasic(clientSecret),
    { execute: [client.enableNonRepudiationChecks], timeout: 15 },
  ),
);

const codeVerifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const authorizationUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope,
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: "S256",
  state,
  nonce,
});
process.stdout.write(JSON.stringify({ authorization_url: authorizationUrl.href }) + "\n");

const callback = await step("reading the callback URL from stdin", async () => {
  const line = await readLine();
  if (!URL.canParse(line)) throw new Error(`not a URL: ${JSON.stringify(line)}`);
  return new URL(line);
});

// Checks iss (RFC 9207, advertised by the provider), state, the code at the token endpoint
// with the PKCE verifier, then the ID token: signature, iss, aud, exp, iat, nonce.
const tokens = await step("authorization code grant", () =>
  client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  }),
);
const claims = tokens.claims();

const userinfo = await step("userinfo", () =>
  client.fetchUserInfo(config, tokens.access_token, claims.sub),
);

if (!tokens.refresh_token) fail("refresh", new Error("no refresh token in the token response"));
const refreshed = await step("refresh token grant", () =>
  client.refreshTokenGrant(config, tokens.refresh_token),
);

process.stdout.write(
  JSON.stringify({
    id_token_claims: claims,
    userinfo,
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expiresIn(),
    refreshed_scope: refreshed.scope,
    refreshed_id_token_claims: refreshed.id_token ? refreshed.claims() : null,
    refresh_rotated:
      Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
    access_token_renewed: refreshed.access_token !== tokens.access_token,
  }) + "\n",
);
