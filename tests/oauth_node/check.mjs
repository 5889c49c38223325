// Drives the authority's OAuth endpoints with openid-client (a third-party library), configured
// only from the discovery document. Usage:
//   AUTHORITY_ISSUER=http://127.0.0.1:8080 OAUTH_CLIENT_ID=svc OAUTH_CLIENT_SECRET=cs_... \
//     node check.mjs [basic|post]
// (the issuer, client id and secret may also be given as argv[2..4], the method as argv[5]).
// Prints one JSON object with every step's result; exits non-zero with {"error": ...} on failure.
import * as client from 'openid-client'

const [argIssuer, argId, argSecret, argMethod] = process.argv.slice(2)
const issuer = argIssuer || process.env.AUTHORITY_ISSUER
const clientId = argId || process.env.OAUTH_CLIENT_ID
const clientSecret = argSecret || process.env.OAUTH_CLIENT_SECRET
const method = argMethod || process.env.OAUTH_AUTH_METHOD || 'basic'
if (!issuer || !clientId || !clientSecret) {
  console.error('usage: node check.mjs ISSUER CLIENT_ID CLIENT_SECRET [basic|post]')
  process.exit(2)
}

const url = new URL(issuer)
const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)
const auth = method === 'post'
  ? client.ClientSecretPost(clientSecret)
  : client.ClientSecretBasic(clientSecret)

try {
  // Plain http only on loopback (the test server has no TLS).
  const config = await client.discovery(url, clientId, undefined, auth, {
    execute: loopback && url.protocol === 'http:' ? [client.allowInsecureRequests] : [],
  })
  const metadata = config.serverMetadata()
  const tokens = await client.clientCredentialsGrant(config, { scope: 'read' })
  const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'))
  const before = await client.tokenIntrospection(config, tokens.access_token)
  await client.tokenRevocation(config, tokens.access_token)
  const after = await client.tokenIntrospection(config, tokens.access_token)
  console.log(JSON.stringify({
    discovery: {
      issuer: metadata.issuer,
      token_endpoint: metadata.token_endpoint,
      introspection_endpoint: metadata.introspection_endpoint,
      revocation_endpoint: metadata.revocation_endpoint,
      grant_types_supported: metadata.grant_types_supported,
    },
    token: {
      token_type: tokens.token_type,
      scope: tokens.scope ?? null,
      expires_in: tokens.expiresIn() ?? null,
      has_refresh_token: tokens.refresh_token !== undefined,
      claims,
    },
    introspection_before: before,
    revoked: true,
    introspection_after: after,
  }))
} catch (error) {
  // A 401 with WWW-Authenticate surfaces as a challenge error whose body is still unread.
  let body = error?.cause && !Array.isArray(error.cause) ? error.cause : null
  if (body === null && error?.response && !error.response.bodyUsed) {
    body = await error.response.json().catch(() => null)
  }
  console.log(JSON.stringify({
    error: String(error?.message ?? error),
    code: error?.code ?? null,
    status: error?.status ?? null,
    oauth_error: error?.error ?? body?.error ?? null,
  }))
  process.exit(1)
}
