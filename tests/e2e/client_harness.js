// Inserted at the top of each test script of test_browser_client.py (inside an async function, in the page).
const m = await import("/behest-client.js");
const encoder = new TextEncoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A body that hands out `parts` (strings or bytes) as separate reads.
const body = (parts) => new ReadableStream({
  start(controller) {
    for (const part of parts) controller.enqueue(typeof part === "string" ? encoder.encode(part) : part);
    controller.close();
  },
});
const sse = (parts, headers = {}) =>
  new Response(body(parts), { status: 200, headers: { "content-type": "text/event-stream", ...headers } });
const json = (status, value, headers = {}) =>
  new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json", ...headers } });
const chunk = (delta, extra = {}) =>
  "data: " + JSON.stringify({ id: "c1", model: "m1", choices: [{ index: 0, delta, finish_reason: null }], ...extra }) + "\n\n";
const DONE = "data: [DONE]\n\n";
const hi = { messages: [{ role: "user", content: "hi" }] };

// A token endpoint and a chat endpoint behind one fake fetch: tokens tok-1, tok-2, … for session s-1.
function fakeBackend({ chat = () => sse([DONE]), tokenDelay = 0, tokenFailures = [] } = {}) {
  const calls = { token: [], chat: [] };
  const fetch = async (url, init) => {
    if (url.endsWith("/api/behest/token")) {
      calls.token.push(JSON.parse(init.body));
      await sleep(tokenDelay);
      const failure = tokenFailures[calls.token.length - 1];
      if (failure) return json(failure, { error: { code: "signing_key_unavailable", message: "later" } });
      return json(200, { token: "tok-" + calls.token.length, ttl: 60, sessionId: "s-1", expiresAt: 2000000000 });
    }
    calls.chat.push({ url, headers: init.headers, body: JSON.parse(init.body) });
    return chat(init.headers.Authorization, calls.chat.length);
  };
  return { calls, fetch };
}

const fakeClient = (backend, options = {}) =>
  new m.BehestClient({ tokenUrl: "/api/behest/token", behestUrl: "https://behest.test", fetch: backend.fetch, ...options });

const errorOf = (e) =>
  ({ name: e.name, message: e.message, status: e.status, code: e.code, type: e.type, retryAfter: e.retryAfter });

// Every delta of a stream, and the error that ended it if one did.
async function drain(stream) {
  const deltas = [];
  try {
    for await (const delta of stream) deltas.push(delta);
  } catch (e) {
    return { deltas, error: errorOf(e) };
  }
  return { deltas };
}

// A real dev user's identity token from the stack's identity provider, and the page's config.
async function signedIn(user = "grace") {
  const config = await (await fetch("/config.json")).json();
  const answer = await fetch(config.identityUrl + "/token", { method: "POST", body: JSON.stringify({ user, plan: "free" }) });
  return { config, idToken: (await answer.json()).id_token };
}
