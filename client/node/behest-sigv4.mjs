// SigV4-sign openai-node's requests for behest-lambda's server-to-server URL (a Function URL with AuthType AWS_IAM).
//
//   npm install openai @smithy/signature-v4 @aws-crypto/sha256-js @aws-sdk/credential-provider-node
//
//   import OpenAI from "openai";
//   import { SignatureV4 } from "@smithy/signature-v4";
//   import { Sha256 } from "@aws-crypto/sha256-js";
//   import { defaultProvider } from "@aws-sdk/credential-provider-node";
//   import { signedFetch, forUser } from "./behest-sigv4.mjs";
//
//   const signer = new SignatureV4({ service: "lambda", region: "us-east-1", credentials: defaultProvider(), sha256: Sha256 });
//   const client = new OpenAI({ baseURL: SERVICE_BASE_URL, apiKey: "unused", fetch: signedFetch(signer) });
//   await client.chat.completions.create({ model: "any", messages }, { headers: forUser("user-42") });
//
// `signedFetch` wraps fetch: each request is signed by the AWS SDK's own SigV4 signer you pass
// (service `lambda`; `defaultProvider()` is the SDK's default credential chain: environment,
// profile, SSO, container or instance role, refreshed by the provider) over its method, URL, body
// and the headers that say what it is and for whom, then sent. Streamed answers need nothing more.
// The user is named per request, so one client serves every user. This module imports nothing: it
// works wherever it is copied, with the signer from the application's own dependencies.

export const USER_ID_HEADER = "x-behest-user-id";
export const TIER_HEADER = "x-behest-tier";
// Signed besides host: what says what the request is and for whom. Headers the HTTP stack adds or
// changes on the way (user-agent, accept-encoding, connection) stay unsigned.
const SIGNED = new Set(["content-type", "x-session-id"]);
const SIGNED_PREFIX = "x-behest-";

/** The headers naming the user a request is for (and their tier), e.g. as a call's `{ headers }` option. */
export function forUser(userId, tier) {
  return { [USER_ID_HEADER]: userId, ...(tier === undefined ? {} : { [TIER_HEADER]: String(tier) }) };
}

/** A fetch for openai-node's `fetch` option that signs every request with `signer` (a SignatureV4). */
export function signedFetch(signer, { fetch: send = globalThis.fetch } = {}) {
  return async (input, init = {}) => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const body = request.body === null ? undefined : new Uint8Array(await request.arrayBuffer());
    const headers = { host: url.host };
    for (const [name, value] of request.headers) {
      if (SIGNED.has(name) || name.startsWith(SIGNED_PREFIX)) headers[name] = value;
    }
    const signed = await signer.sign({
      method: request.method, protocol: url.protocol, hostname: url.hostname, port: url.port || undefined,
      path: url.pathname, query: Object.fromEntries(url.searchParams), headers, body,
    });
    const sent = new Headers(request.headers);
    for (const [name, value] of Object.entries(signed.headers)) {
      if (name !== "host") sent.set(name, value);
    }
    return send(request.url, { method: request.method, headers: sent, body, signal: request.signal });
  };
}
