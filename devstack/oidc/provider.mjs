// A real OpenID provider for the federation tests: oidc-provider (OpenID Certified),
// issuing JWT access tokens by client credentials. Configured by one JSON file:
//   {"port", "keys": [private JWKs; the first signs], "clients": [{client_id,
//    client_secret, groups, ttl}], "resources": {"<audience>": "<scopes>"}}
// GET /test/jwks-fetches answers how many times /jwks was read.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const issuer = `http://127.0.0.1:${config.port}`;
const byId = Object.fromEntries(config.clients.map((c) => [c.client_id, c]));
let jwksFetches = 0;

const provider = new Provider(issuer, {
  jwks: { keys: config.keys },
  clients: config.clients.map(({ client_id, client_secret }) => ({
    client_id, client_secret, grant_types: ["client_credentials"], redirect_uris: [],
    response_types: [], token_endpoint_auth_method: "client_secret_basic",
    id_token_signed_response_alg: config.keys[0].alg,
  })),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => Object.keys(config.resources)[0],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => {
        if (!(resource in config.resources)) throw new Provider.errors.InvalidTarget();
        return { scope: config.resources[resource], audience: resource,
                 accessTokenTTL: byId[client.clientId].ttl,
                 accessTokenFormat: "jwt", jwt: { sign: { alg: config.keys[0].alg } } };
      },
    },
  },
  extraTokenClaims: (ctx, token) => ({ groups: byId[token.clientId].groups }),
});
provider.use(async (ctx, next) => {
  if (ctx.path === "/test/jwks-fetches") {
    ctx.body = { fetches: jwksFetches };
    return;
  }
  if (ctx.path === "/jwks") jwksFetches += 1;
  await next();
});
provider.listen(config.port, "127.0.0.1", () => console.log(`listening on ${issuer}`));
