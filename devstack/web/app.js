// The demo chat: a dev user signs in, BehestClient keeps the token fresh and streams the answers.
// Query parameters for trying refreshes quickly: ?ttl=60 (seconds asked for), ?margin=57 (refresh that long before expiry);
// ?auth=cookie starts in cookie mode where the provider has a session cookie (Clerk, Supabase).
import { BehestClient } from "/behest-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// The page's clock: tests (and the curious) move it forward with demo.clock.advance(seconds).
const clock = {
  offset: 0,
  now: () => Date.now() + clock.offset,
  advance(seconds) {
    clock.offset += seconds * 1000;
    renderToken();
  },
};

const demo = {
  ready: false,
  config: null,
  client: null,
  identityToken: null,
  clock,
  history: [],
  refreshes: [],
  errors: [],
  controller: null,
};
window.demo = demo;

function show(id, text, isError) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

function numberParam(name) {
  const value = Number.parseFloat(params.get(name) || "");
  return Number.isFinite(value) ? value : undefined;
}

function formatSeconds(seconds) {
  const whole = Math.ceil(seconds);
  return Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
}

async function loadConfig() {
  const response = await fetch("/config.json");
  demo.config = await response.json();
  $("idp-name").textContent = demo.config.identityProvider || "oidc";
  if (demo.config.cookieName) {
    const cookieOption = $("auth").querySelector("option[value=cookie]");
    cookieOption.disabled = false;
    cookieOption.textContent = "session cookie (" + demo.config.cookieName + ")";
    if (params.get("auth") === "cookie") $("auth").value = "cookie";
  }
  $("sign-in").disabled = false;
  show("sign-in-status", "");
  demo.ready = true;
}

async function signIn() {
  const user = $("user").value;
  const plan = $("plan").value;
  try {
    const response = await fetch(demo.config.identityUrl + "/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, plan }),
    });
    if (!response.ok) throw new Error("identity provider answered " + response.status);
    const session = await response.json();
    demo.identityToken = session.id_token;
    if ($("auth").value === "cookie") writeSessionCookies(session.cookies || []);
  } catch (error) {
    show("sign-in-status", "Sign-in failed: " + error.message, true);
    return;
  }
  const by = $("auth").value === "cookie" ? "session cookie " + demo.config.cookieName : "bearer token";
  show("sign-in-status", "Signed in as " + user + " (" + plan + ") by " + by);
  startClient();
  await showFirstToken();
}

// What the provider's browser SDK does after sign-in (clerk-js, @supabase/ssr's browser client): write its
// session cookie(s) on this origin, and clear chunks of an earlier, larger session.
function writeSessionCookies(cookies) {
  const written = new Set(cookies.map((cookie) => cookie.name));
  for (const pair of document.cookie.split(";")) {
    const name = pair.split("=")[0].trim();
    if (name.startsWith(demo.config.cookieName) && !written.has(name)) {
      document.cookie = name + "=; Path=/; Max-Age=0; SameSite=Lax";
    }
  }
  for (const { name, value } of cookies) document.cookie = name + "=" + value + "; Path=/; SameSite=Lax";
}

function startClient() {
  if (demo.client) demo.client.close();
  demo.refreshes = [];
  demo.errors = [];
  newChat();
  const identity = $("auth").value === "cookie"
    ? { auth: "cookie" }
    : { auth: "bearer", identityToken: () => demo.identityToken };
  const client = new BehestClient({
    tokenUrl: demo.config.apiUrl + "/api/behest/token",
    ...identity,
    behestUrl: demo.config.behestUrl,
    relayUrl: demo.config.relayUrl,
    ttl: numberParam("ttl"),
    refreshMargin: numberParam("margin"),
    now: clock.now,
  });
  client.addEventListener("token", (event) => {
    const { token, reason } = event.detail;
    if (reason !== "initial") {
      demo.refreshes.push({ reason, sessionId: token.sessionId, at: new Date().toLocaleTimeString() });
    }
    renderToken();
  });
  client.addEventListener("error", (event) => {
    demo.errors.push(event.detail.error.message);
    show("token-status", "Refresh failed (" + event.detail.error.message + "); the current token is kept", true);
  });
  demo.client = client;
}

async function showFirstToken() {
  try {
    await demo.client.token();
    $("send").disabled = false;
    $("refresh-token").disabled = false;
  } catch (error) {
    show("token-status", "Token request failed: " + error.message, true);
  }
}

function renderToken() {
  const client = demo.client;
  const token = client && client.current;
  if (!token) return;
  show("token-status", "Token for session " + token.sessionId + ", valid " + token.ttl + " s");
  const left = client.expiresIn();
  $("token-expiry").textContent = formatSeconds(left);
  $("token-meter").style.width = Math.min(100, (100 * left) / token.ttl).toFixed(1) + "%";
  const count = demo.refreshes.length;
  const last = demo.refreshes[count - 1];
  $("token-refreshes").textContent = count === 0
    ? "none yet"
    : count + (count === 1 ? " refresh" : " refreshes") + ", last at " + last.at + " (" + last.reason + ")";
}

function newChat() {
  if (demo.controller) demo.controller.abort();
  demo.history = [];
  $("transcript").replaceChildren(Object.assign(document.createElement("span"), {
    className: "empty", id: "transcript-empty", textContent: "No messages yet.",
  }));
  show("chat-status", "");
}

function addTurn(role, text) {
  $("transcript-empty")?.remove();
  const turn = document.createElement("div");
  turn.className = "turn " + role;
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  turn.append(content);
  $("transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

function addMeta(turn, text) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  turn.append(meta);
}

function usageText(usage) {
  if (!usage) return "no usage reported";
  return usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion = " + usage.total_tokens + " tokens";
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || demo.controller) return;
  const via = document.querySelector("input[name=route]:checked").value;
  const messages = [...demo.history, { role: "user", content: text }];
  addTurn("user", text);
  $("message").value = "";
  const answer = addTurn("assistant", "");
  answer.dataset.via = via;
  const content = answer.querySelector(".content");
  const controller = new AbortController();
  demo.controller = controller;
  $("send").disabled = true;
  $("stop").disabled = false;
  show("chat-status", "waiting for the first token (" + via + ")…");
  const sent = performance.now();
  let firstToken = null;
  let chunks = 0;
  const stream = demo.client.chat({ messages }, { via, includeUsage: true, signal: controller.signal });
  try {
    for await (const delta of stream) {
      if (firstToken === null) firstToken = performance.now() - sent;
      content.textContent += delta;
      chunks += 1;
      show("chat-status", "streaming… " + chunks + " chunks");
    }
    demo.history = [...messages, { role: "assistant", content: stream.text }];
    addMeta(answer, via + " · first token " + Math.round(firstToken ?? 0) + " ms · " + usageText(stream.usage));
    show("chat-status", "done: " + chunks + " chunks");
  } catch (error) {
    answer.classList.add("failed");
    if (error.name === "AbortError") {
      addMeta(answer, via + " · stopped");
      show("chat-status", "stopped after " + chunks + " chunks");
    } else {
      const code = error.code ? " (" + error.code + ")" : "";
      addMeta(answer, via + " · failed");
      show("chat-status", (via === "direct" ? "Direct" : "Relay") + " call failed: " + error.message + code, true);
    }
  } finally {
    demo.controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("sign-in").addEventListener("click", signIn);
$("refresh-token").addEventListener("click", () => demo.client.refresh().catch((error) => {
  show("token-status", "Token request failed: " + error.message, true);
}));
$("composer").addEventListener("submit", send);
$("stop").addEventListener("click", () => demo.controller?.abort());
$("new-chat").addEventListener("click", newChat);
setInterval(renderToken, 250);
loadConfig().catch((error) => show("sign-in-status", "Could not load /config.json: " + error.message, true));
