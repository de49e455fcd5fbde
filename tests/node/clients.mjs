// Real Node clients (openai-node and the Vercel AI SDK) against `make dev`: one JSON line per scenario and front.
//
//   NODE_CLIENTS_TOKEN=<identity token> node clients.mjs --front api=<url> --front stream=<url> \
//       --standin <stand-in Behest url> [scenario ...]
//
// The token comes from the environment, not argv, so that it never shows in a process list.
// Every line: {front, scenario, ok, started_at, ended_at, sent (what the SDK sent), ...what it got}; times are epoch
// seconds on the wall clock, the clock the stand-in records `received_at` with, so the caller can
// match each scenario to the upstream requests it caused and tell when a stream's events arrived.
// A scenario that expects an error reports it under `error`; `ok` is false only when the client
// threw something the scenario did not expect (then `error` says what).

import { parseArgs } from "node:util";

import { createOpenAI } from "@ai-sdk/openai";
import { APICallError, generateText, Output, stepCountIs, streamText, tool } from "ai";
import OpenAI from "openai";
import { zodResponseFormat, zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";

const MODEL = "behest-default";
const EMBEDDING_MODEL = "behest-embed";
const SPOOFED_USER = "mallory";
// How the AI SDK passes OpenAI's `user` and `safety_identifier`: the relay must replace both.
const SPOOFED = { openai: { user: SPOOFED_USER, safetyIdentifier: SPOOFED_USER } };
const CALL_TIMEOUT_MS = 20_000;
// Long enough that the stand-in's pacing spans several hundred milliseconds: a live stream is then
// plainly told apart from a buffered one.
const LONG_PROMPT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
const RATE_LIMIT = { kind: "status", status: 429, retry_after: 7 };
// Behest resets the connection after three stream events: the relay ends the stream with an error event.
const BROKEN_STREAM = { kind: "reset_after", chunks: 3 };

// Function calling and structured output: two tools (called in parallel on a first turn), one model for parsing.
const ASK = "weather and time in Oslo";
const WEATHER = { type: "object", properties: { city: { type: "string" }, days: { type: "integer", minimum: 1 } },
  required: ["city", "days"], additionalProperties: false };
const TIME = { type: "object", properties: { zone: { type: "string" } }, required: ["zone"], additionalProperties: false };
const CHAT_TOOLS = [{ type: "function", function: { name: "weather", parameters: WEATHER, strict: true } },
  { type: "function", function: { name: "time", parameters: TIME, strict: true } }];
const RESPONSES_TOOLS = [{ type: "function", name: "weather", parameters: WEATHER, strict: true },
  { type: "function", name: "time", parameters: TIME, strict: true }];
const Weather = z.object({ city: z.string(), days: z.number().int().min(1) });
// The AI SDK's tools run here, in the client: their results go back to the model on the next step.
const AI_TOOLS = {
  weather: tool({ description: "The weather in a city", inputSchema: Weather,
    execute: async ({ city, days }) => `${city}: sunny for ${days} days` }),
  time: tool({ description: "The time in a zone", inputSchema: z.object({ zone: z.string() }),
    execute: async ({ zone }) => `${zone}: 14:05` }),
};

const now = () => (performance.timeOrigin + performance.now()) / 1000;

/**
 * The global fetch, noting the path and the `user` / `safety_identifier` of every JSON body the SDK sends:
 * proof that a spoofed user really left the client, so that finding the verified one upstream means something.
 */
function recordingFetch(sent) {
  return (url, init) => {
    const body = typeof init?.body === "string" ? parsedOrNull(init.body) : null;
    sent.push({
      method: init?.method ?? "GET",
      path: new URL(String(url)).pathname,
      user: body?.user ?? null,
      safety_identifier: body?.safety_identifier ?? null,
    });
    return fetch(url, init);
  };
}

function openaiNode(baseURL, token, sent) {
  return new OpenAI({
    baseURL: `${baseURL}/v1`, apiKey: token, maxRetries: 0, timeout: CALL_TIMEOUT_MS, fetch: recordingFetch(sent),
  });
}

function vercel(baseURL, token, sent) {
  return createOpenAI({ baseURL: `${baseURL}/v1`, apiKey: token, fetch: recordingFetch(sent) });
}

// The AI SDK retries twice by default: a test of what one upstream answer does needs exactly one call.
const once = () => ({ maxRetries: 0, abortSignal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
// streamText logs a stream's error to the console unless given onError; the scenarios read it from fullStream.
const streamedOnce = () => ({ ...once(), onError: () => {} });

/** What a test needs to know of an error, and nothing else (never a header that could carry a token). */
function described(error) {
  const out = { class: error?.constructor?.name ?? typeof error, message: String(error?.message ?? error).slice(0, 300) };
  if (error instanceof OpenAI.APIError) {
    Object.assign(out, {
      status: error.status ?? null,
      code: error.code ?? null,
      type: error.type ?? null,
      retry_after: error.headers?.get("retry-after") ?? null,
    });
  }
  if (APICallError.isInstance(error)) {
    Object.assign(out, {
      ai_sdk_api_call_error: true,
      status: error.statusCode ?? null,
      retry_after: error.responseHeaders?.["retry-after"] ?? null,
      is_retryable: error.isRetryable,
      body: parsedOrNull(error.responseBody),
    });
  }
  return out;
}

function parsedOrNull(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function standin(standinURL, method, path, body) {
  const answer = await fetch(standinURL + path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  if (!answer.ok) throw new Error(`stand-in ${method} ${path} answered ${answer.status}`);
  return answer.json();
}

/** Run `call` with `fault` queued on the stand-in, cleared again whatever happens. */
async function withFault(ctx, fault, call) {
  await standin(ctx.standinURL, "POST", "/_standin/faults", fault);
  try {
    return await call();
  } finally {
    await standin(ctx.standinURL, "DELETE", "/_standin/faults");
  }
}

/** The error `call` throws, described; `{error: null}` when it throws none. */
async function expectError(call) {
  try {
    await call();
    return { error: null };
  } catch (error) {
    return { error: described(error) };
  }
}

/** A scenario: `call` meets an upstream 429 with Retry-After on `route`; its result is the error the client threw. */
function rateLimited(route, call) {
  return (ctx) => withFault(ctx, { ...RATE_LIMIT, path: route }, () => expectError(() => call(ctx)));
}

/** Every event of an openai-node stream, and what it threw, if it threw. */
async function openaiEvents(stream) {
  const events = [];
  try {
    for await (const event of stream) events.push(event);
  } catch (error) {
    return { events, error: described(error) };
  }
  return { events, error: null };
}

async function openaiStreamArrivals(stream, textOf) {
  const arrivals = [];
  let text = "";
  for await (const event of stream) {
    const delta = textOf(event);
    arrivals.push({ type: event.type ?? "chunk", at: now(), delta: delta ?? null });
    if (delta) text += delta;
  }
  return { arrivals, text };
}

function generated(result) {
  return { text: result.text, finish_reason: result.finishReason, usage: result.usage };
}

async function vercelStreamArrivals(result) {
  const arrivals = [];
  let text = "";
  for await (const part of result.fullStream) {
    arrivals.push({ type: part.type, at: now(), delta: part.type === "text-delta" ? part.text : null });
    if (part.type === "text-delta") text += part.text;
    if (part.type === "error") return { arrivals, text, error: described(part.error) };
  }
  return { arrivals, text, error: null };
}

const callsOf = (message) => (message.tool_calls ?? []).map((c) => [c.function.name, JSON.parse(c.function.arguments), c.id]);
const itemCallsOf = (output) =>
  output.filter((item) => item.type === "function_call").map((c) => [c.name, JSON.parse(c.arguments), c.call_id]);

function stepsOf(steps) {
  return steps.map((step) => ({
    finish_reason: step.finishReason,
    calls: step.toolCalls.map((c) => [c.toolName, c.input]),
    results: step.toolResults.map((r) => [r.toolName, r.output]),
    usage: { input: step.usage.inputTokens, output: step.usage.outputTokens },
  }));
}

async function aiToolsGenerated(model) {
  const result = await generateText({ model, tools: AI_TOOLS, stopWhen: stepCountIs(3), prompt: ASK, ...once() });
  return { text: result.text, steps: stepsOf(result.steps) };
}

async function aiToolsStreamed(model) {
  const result = streamText({ model, tools: AI_TOOLS, stopWhen: stepCountIs(3), prompt: ASK, ...streamedOnce() });
  const kinds = [];
  for await (const part of result.fullStream) {
    if (part.type === "error") return { kinds, error: described(part.error) };
    kinds.push(part.type);
  }
  return { kinds, error: null, text: await result.text, steps: stepsOf(await result.steps) };
}

async function aiObject(model) {
  const result = await generateText({ model, output: Output.object({ schema: Weather }), prompt: ASK, ...once() });
  return { output: result.output };
}

const SCENARIOS = {
  // --- openai-node -------------------------------------------------------------------------------------------
  "openai.models.list": async ({ sdk }) => {
    const ids = [];
    for await (const model of sdk.models.list()) ids.push(model.id);
    const one = await sdk.models.retrieve(ids[0]);
    return { ids, retrieved: { id: one.id, object: one.object } };
  },
  "openai.models.retrieve-unknown": async ({ sdk }) => expectError(() => sdk.models.retrieve("no-such-model")),
  "openai.embeddings.create": async ({ sdk }) => {
    // No encoding_format: the SDK asks for base64 and decodes it into floats itself.
    const answer = await sdk.embeddings.create({ model: EMBEDDING_MODEL, input: "hello world", user: SPOOFED_USER });
    const vector = answer.data[0].embedding;
    return {
      count: answer.data.length,
      dimensions: vector.length,
      all_finite_numbers: vector.every((x) => typeof x === "number" && Number.isFinite(x)),
      prompt_tokens: answer.usage.prompt_tokens,
    };
  },
  "openai.responses.create": async ({ sdk }) => {
    const response = await sdk.responses.create({
      model: MODEL, input: "hi there", user: SPOOFED_USER, safety_identifier: SPOOFED_USER, max_output_tokens: 10 ** 7,
    });
    return { output_text: response.output_text, status: response.status, usage: response.usage };
  },
  "openai.responses.stream": async ({ sdk }) => {
    const stream = await sdk.responses.create({
      model: MODEL, input: LONG_PROMPT, stream: true, user: SPOOFED_USER, safety_identifier: SPOOFED_USER,
    });
    return openaiStreamArrivals(stream, (event) => (event.type === "response.output_text.delta" ? event.delta : null));
  },
  "openai.chat.stream": async ({ sdk }) => {
    const stream = await sdk.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: LONG_PROMPT }], stream: true, user: SPOOFED_USER,
    });
    return openaiStreamArrivals(stream, (chunk) => chunk.choices[0]?.delta?.content ?? null);
  },
  "openai.responses.broken-stream": async (ctx) =>
    withFault(ctx, { ...BROKEN_STREAM, path: "responses" },
      async () => openaiEvents(await ctx.sdk.responses.create({ model: MODEL, input: "x", stream: true }))),
  "openai.chat.broken-stream": async (ctx) =>
    withFault(ctx, { ...BROKEN_STREAM, path: "chat" }, async () => openaiEvents(await ctx.sdk.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: LONG_PROMPT }], stream: true,
    }))),
  "openai.chat.tools": async ({ sdk }) => {
    const first = await sdk.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: ASK }],
      tools: CHAT_TOOLS });
    const message = first.choices[0].message;
    const streamed = await sdk.chat.completions.stream({ model: MODEL, messages: [{ role: "user", content: ASK }],
      tools: CHAT_TOOLS, stream_options: { include_usage: true } }).finalChatCompletion();
    const results = message.tool_calls.map((c) => ({ role: "tool", tool_call_id: c.id, content: `${c.function.name} fine` }));
    const second = await sdk.chat.completions.create({ model: MODEL,
      messages: [{ role: "user", content: ASK }, message, ...results], tools: CHAT_TOOLS });
    return {
      calls: callsOf(message), streamed_calls: callsOf(streamed.choices[0].message), streamed_usage: streamed.usage,
      finish_reasons: [first, streamed, second].map((answer) => answer.choices[0].finish_reason),
      text: second.choices[0].message.content,
    };
  },
  "openai.responses.tools": async ({ sdk }) => {
    const input = [{ role: "user", content: ASK }];
    const first = await sdk.responses.create({ model: MODEL, input, tools: RESPONSES_TOOLS });
    const stream = sdk.responses.stream({ model: MODEL, input, tools: RESPONSES_TOOLS });
    const kinds = [];
    for await (const event of stream) kinds.push(event.type);
    const streamed = await stream.finalResponse();
    const calls = first.output.filter((item) => item.type === "function_call");
    const outputs = calls.map((c) => ({ type: "function_call_output", call_id: c.call_id, output: `${c.name} fine` }));
    const second = await sdk.responses.create({ model: MODEL, input: [...input, ...calls, ...outputs], tools: RESPONSES_TOOLS });
    return { calls: itemCallsOf(first.output), streamed_calls: itemCallsOf(streamed.output), kinds, text: second.output_text };
  },
  "openai.parse": async ({ sdk }) => {
    const chat = await sdk.chat.completions.parse({ model: MODEL, messages: [{ role: "user", content: ASK }],
      response_format: zodResponseFormat(Weather, "weather") });
    const response = await sdk.responses.parse({ model: MODEL, input: ASK, text: { format: zodTextFormat(Weather, "weather") } });
    return { chat: chat.choices[0].message.parsed, response: response.output_parsed };
  },
  "openai.rate-limit.models": rateLimited("models", ({ sdk }) => sdk.models.list()),
  "openai.rate-limit.embeddings": rateLimited("embeddings",
    ({ sdk }) => sdk.embeddings.create({ model: EMBEDDING_MODEL, input: "x" })),
  "openai.rate-limit.responses": rateLimited("responses", ({ sdk }) => sdk.responses.create({ model: MODEL, input: "x" })),
  "openai.rate-limit.chat": rateLimited("chat",
    ({ sdk }) => sdk.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "x" }] })),

  // --- Vercel AI SDK: its default model speaks the Responses API, `.chat()` chat completions -------------------
  "ai.responses.generateText": async ({ ai }) =>
    generated(await generateText({ model: ai(MODEL), prompt: "hi there", providerOptions: SPOOFED, ...once() })),
  "ai.responses.streamText": async ({ ai }) =>
    vercelStreamArrivals(streamText({ model: ai(MODEL), prompt: LONG_PROMPT, providerOptions: SPOOFED, ...streamedOnce() })),
  "ai.chat.generateText": async ({ ai }) =>
    generated(await generateText({ model: ai.chat(MODEL), prompt: "hi there", providerOptions: SPOOFED, ...once() })),
  "ai.chat.streamText": async ({ ai }) =>
    vercelStreamArrivals(streamText({
      model: ai.chat(MODEL), prompt: LONG_PROMPT, providerOptions: SPOOFED, ...streamedOnce(),
    })),
  "ai.responses.broken-stream": async (ctx) =>
    withFault(ctx, { ...BROKEN_STREAM, path: "responses" },
      () => vercelStreamArrivals(streamText({ model: ctx.ai(MODEL), prompt: "x", ...streamedOnce() }))),
  "ai.chat.broken-stream": async (ctx) =>
    withFault(ctx, { ...BROKEN_STREAM, path: "chat" },
      () => vercelStreamArrivals(streamText({ model: ctx.ai.chat(MODEL), prompt: LONG_PROMPT, ...streamedOnce() }))),
  // Legacy completions (POST /v1/completions), the AI SDK's `.completion()` model.
  "ai.completion.generateText": async ({ ai }) =>
    generated(await generateText({ model: ai.completion(MODEL), prompt: "hi there", ...once() })),
  "ai.completion.streamText": async ({ ai }) =>
    vercelStreamArrivals(streamText({ model: ai.completion(MODEL), prompt: LONG_PROMPT, ...streamedOnce() })),
  "ai.responses.tools.generateText": async ({ ai }) => aiToolsGenerated(ai(MODEL)),
  "ai.responses.tools.streamText": async ({ ai }) => aiToolsStreamed(ai(MODEL)),
  "ai.chat.tools.generateText": async ({ ai }) => aiToolsGenerated(ai.chat(MODEL)),
  "ai.chat.tools.streamText": async ({ ai }) => aiToolsStreamed(ai.chat(MODEL)),
  "ai.responses.object": async ({ ai }) => aiObject(ai(MODEL)),
  "ai.chat.object": async ({ ai }) => aiObject(ai.chat(MODEL)),
  "ai.rate-limit.responses": rateLimited("responses", ({ ai }) => generateText({ model: ai(MODEL), prompt: "x", ...once() })),
  "ai.rate-limit.chat": rateLimited("chat", ({ ai }) => generateText({ model: ai.chat(MODEL), prompt: "x", ...once() })),
  // streamText never throws: the refusal is an `error` part of the stream.
  "ai.rate-limit.responses-stream": async (ctx) =>
    withFault(ctx, { ...RATE_LIMIT, path: "responses" },
      () => vercelStreamArrivals(streamText({ model: ctx.ai(MODEL), prompt: "x", ...streamedOnce() }))),
};

async function main() {
  const { values, positionals } = parseArgs({
    options: { front: { type: "string", multiple: true }, standin: { type: "string" } },
    allowPositionals: true,
  });
  const token = process.env.NODE_CLIENTS_TOKEN;
  const fronts = Object.fromEntries((values.front ?? []).map((pair) => pair.split(/=(.*)/s).slice(0, 2)));
  const names = positionals.length ? positionals : Object.keys(SCENARIOS);
  const unknown = names.filter((name) => !(name in SCENARIOS));
  if (!token || !values.standin || !Object.keys(fronts).length || unknown.length) {
    process.stderr.write(`usage: NODE_CLIENTS_TOKEN=… node clients.mjs --front name=url … --standin url [scenario …]\n`
      + (unknown.length ? `unknown scenarios: ${unknown.join(", ")}\n` : "")
      + `scenarios: ${Object.keys(SCENARIOS).join(", ")}\n`);
    process.exit(2);
  }
  for (const [front, baseURL] of Object.entries(fronts)) {
    const sent = [];
    const ctx = { sdk: openaiNode(baseURL, token, sent), ai: vercel(baseURL, token, sent), standinURL: values.standin };
    for (const scenario of names) {
      sent.length = 0;
      const started_at = now();
      let line;
      try {
        line = { ok: true, ...(await SCENARIOS[scenario](ctx)) };
      } catch (error) {
        line = { ok: false, error: described(error) };
      }
      process.stdout.write(JSON.stringify({ front, scenario, started_at, ended_at: now(), sent, ...line }) + "\n");
    }
  }
}

await main();
