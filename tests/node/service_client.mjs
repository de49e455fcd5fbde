// openai-node signed by client/node/behest-sigv4.mjs against `make dev`'s server-to-server URL: one JSON line out.
//
//   AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_SESSION_TOKEN=… node service_client.mjs <base url> users|refused
//
// Credentials come from the AWS SDK's default chain (here: the environment), as on a real backend.
// `users`: every route for two users through one client. `refused`: one call, and the error it got.

import { Sha256 } from "@aws-crypto/sha256-js";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { SignatureV4 } from "@smithy/signature-v4";
import OpenAI from "openai";

import { forUser, signedFetch } from "../../client/node/behest-sigv4.mjs";

const [baseURL, scenario] = process.argv.slice(2);
const HI = [{ role: "user", content: "hi" }];
const signer = new SignatureV4({ service: "lambda", region: "us-east-1", credentials: defaultProvider(), sha256: Sha256 });
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "unused", maxRetries: 0, fetch: signedFetch(signer) });
const USERS = ["nia", "oli"];

async function users() {
  const result = { chat: [], streamed: [], responses: [], embeddings: [], models: [] };
  for (const user of USERS) {
    const options = { headers: forUser(user) };
    const chat = await client.chat.completions.create({ model: "any", messages: HI }, options);
    result.chat.push(chat.choices[0].message.content);
    const stream = await client.chat.completions.create({ model: "any", messages: HI, stream: true }, options);
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    result.streamed.push(text);
    result.responses.push((await client.responses.create({ model: "behest-default", input: "hi" }, options)).output_text);
    const embedded = await client.embeddings.create({ model: "behest-embed", input: "hello" }, options);
    result.embeddings.push(embedded.data[0].embedding.length);
    const models = [];
    for await (const model of client.models.list(options)) models.push(model.id);
    result.models.push(models);
  }
  return result;
}

async function refused() {
  try {
    await client.chat.completions.create({ model: "any", messages: HI }, { headers: forUser("ada") });
    return { status: 200 };
  } catch (error) {
    return { status: error.status, code: error.code ?? null };
  }
}

const run = { users, refused }[scenario];
process.stdout.write(JSON.stringify(await run()) + "\n");
