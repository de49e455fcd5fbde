/**
 * behest-client.js: Behest in the browser, behind your own users' logins.
 *
 * A dependency-free ES module (no build step; copy it into your app). It fetches a per-user
 * Behest token from your token endpoint (`POST /api/behest/token`), caches it, refreshes it
 * ahead of its expiry (on a timer and on use, one refresh at a time, continuing the same
 * session), refreshes once and retries once on a 401, and streams chat completions either
 * browser-direct to Behest or through the streaming relay.
 *
 *     import { BehestClient } from "./behest-client.js";
 *     const behest = new BehestClient({
 *       tokenUrl: "https://api.example.com/api/behest/token",
 *       identityToken: () => auth.getIdToken(),
 *       behestUrl: "https://amber-fox-042.behest.app",
 *     });
 *     const stream = behest.chat({ messages: [{ role: "user", content: "hi" }] }, { includeUsage: true });
 *     for await (const text of stream) output.append(text);
 *     console.log(stream.usage);
 *
 * With a session cookie instead (Clerk's `__session`, Supabase's `sb-<ref>-auth-token`), the
 * browser sends the cookie and the client no Authorization header:
 *
 *     const behest = new BehestClient({ tokenUrl: "/api/behest/token", auth: "cookie", relayUrl });
 *
 * @module behest-client
 */

const MAX_DEFAULT_MARGIN_SECONDS = 60;
const DEFAULT_MARGIN_FRACTION = 0.1;
const DEFAULT_TOKEN_TIMEOUT_MS = 10000;
// A failed background refresh is tried again this often while the old token still works.
const BACKGROUND_RETRY_MS = 5000;
// A token is used for at least this long before the next refresh, whatever the margin says.
const MIN_TOKEN_USE_SECONDS = 1;
const CHAT_PATH = "/v1/chat/completions";
const DONE = "[DONE]";
const STATUS_BY_OPENAI_TYPE = {
  invalid_request_error: 400,
  authentication_error: 401,
  insufficient_quota: 402,
  permission_error: 403,
  not_found_error: 404,
  rate_limit_error: 429,
  content_policy_violation: 451,
};

/**
 * A failed token fetch, chat request or stream.
 *
 * `status` is the HTTP status (0 for a network failure or a broken stream), `code` Behest's error
 * code (`invalid_token`, `rate_limited`, `network_error`, `timeout`, `stream_incomplete`, …),
 * `type` OpenAI's error type when given, `retryAfter` seconds from `Retry-After`, `traceId` from
 * `X-Trace-Id`. A cancelled request is not a BehestError: the AbortSignal's reason (an
 * `AbortError`) is thrown as is.
 */
export class BehestError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, type?: string|null, retryAfter?: number|null,
   *          traceId?: string|null, cause?: unknown}} [details]
   */
  constructor(message, { status = 0, code = "request_failed", type = null, retryAfter = null, traceId = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "BehestError";
    /** @type {number} */
    this.status = status;
    /** @type {string} */
    this.code = code;
    /** @type {string|null} */
    this.type = type;
    /** @type {number|null} */
    this.retryAfter = retryAfter;
    /** @type {string|null} */
    this.traceId = traceId;
  }
}

/**
 * @typedef {object} TokenInfo A Behest token as the client holds it.
 * @property {string} token The Behest JWT (bearer for Behest).
 * @property {number} ttl Its lifetime in seconds, as granted.
 * @property {string} sessionId The session it belongs to (sent as `X-Session-Id`).
 * @property {number} expiresAt Expiry in Unix seconds, by the server's clock.
 * @property {number} validUntil Expiry in milliseconds by this client's clock (request start + ttl).
 * @property {number} refreshAt When this client refreshes it (milliseconds, this client's clock).
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} tokenUrl Your token endpoint, e.g. `https://api.example.com/api/behest/token`.
 * @property {"bearer"|"cookie"} [auth] How the user's identity reaches the token endpoint and the relay:
 *   `"bearer"` (default) sends `identityToken()` as `Authorization: Bearer …`; `"cookie"` sends none and
 *   lets the browser send the identity provider's session cookie (`credentials: "include"` unless
 *   `credentials` says otherwise). The server must allow the page's origin with credentials.
 * @property {() => (string|Promise<string>)} [identityToken] Returns the signed-in user's identity
 *   token (sent as `Authorization: Bearer …` to the token endpoint and to the relay). Called for every
 *   token fetch and relay request, and once more after a 401 from the relay: return a current token.
 * @property {() => (Record<string, string>|Promise<Record<string, string>>)} [headers] Extra headers
 *   for the token endpoint (e.g. a CSRF header with cookie sessions).
 * @property {RequestCredentials} [credentials] `fetch` credentials for the token endpoint and the relay
 *   (`"include"` for cookie sessions on another origin).
 * @property {string} [behestUrl] Behest's base URL, for `via: "direct"`.
 * @property {string} [relayUrl] The streaming relay's base URL (Function URL), for `via: "relay"`.
 * @property {number} [ttl] Token lifetime to ask for, seconds (the endpoint clamps it; 60 at least).
 * @property {string} [sessionId] A session to continue.
 * @property {number} [refreshMargin] Seconds before expiry to refresh; default 10 % of the ttl, 60 at most.
 * @property {boolean} [autoRefresh] Refresh on a timer too, not only on use (default true).
 * @property {number} [tokenTimeout] Milliseconds a token fetch may take (default 10000).
 * @property {typeof fetch} [fetch] The fetch to use (default the global one).
 * @property {() => number} [now] The clock, in milliseconds (default `Date.now`).
 */

/**
 * @typedef {object} ChatOptions
 * @property {"direct"|"relay"} [via] Browser-direct to Behest with the Behest token (default), or
 *   through the streaming relay with the identity token.
 * @property {boolean} [includeUsage] Ask for the final usage chunk (`stream_options.include_usage`);
 *   the stream's `usage` holds it once the loop has ended.
 * @property {AbortSignal} [signal] Cancels the request and the stream.
 */

/**
 * Holds one user's Behest token and session; streams chat with it.
 *
 * Events: `"token"` (a new token: `detail` = `{token: TokenInfo, reason}`, reason one of
 * `"initial"`, `"expiring"`, `"timer"`, `"unauthorized"`, `"manual"`) and `"error"` (a background
 * refresh failed: `detail` = `{error, reason}`; the old token is used while it lasts).
 */
export class BehestClient extends EventTarget {
  #options;
  #fetch;
  #now;
  /** @type {TokenInfo|null} */
  #current = null;
  /** @type {Promise<TokenInfo>|null} */
  #inflight = null;
  /** @type {string|null} */
  #sessionId;
  /** @type {ReturnType<typeof setTimeout>|null} */
  #timer = null;
  // Bumped by close(): a refresh that started before it must not bring the token back.
  #epoch = 0;

  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options.tokenUrl !== "string" || !options.tokenUrl) {
      throw new TypeError("BehestClient needs a tokenUrl");
    }
    const auth = options.auth === undefined ? "bearer" : options.auth;
    if (auth !== "bearer" && auth !== "cookie") throw new TypeError('auth must be "bearer" or "cookie"');
    if (auth === "cookie" && options.identityToken) {
      // The server takes a bearer header before a cookie: one way only, so that the user is never ambiguous.
      throw new TypeError('auth: "cookie" sends no identity token: drop identityToken (or use auth: "bearer")');
    }
    this.#options = { autoRefresh: true, tokenTimeout: DEFAULT_TOKEN_TIMEOUT_MS, ...options, auth };
    if (auth === "cookie" && !options.credentials) this.#options.credentials = "include";
    this.#fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.#now = options.now || Date.now;
    this.#sessionId = options.sessionId || null;
  }

  /** The token held now (possibly stale), or null. */
  get current() {
    return this.#current;
  }

  /** The session every request continues (`X-Session-Id`), or null before the first token. */
  get sessionId() {
    return this.#sessionId;
  }

  /** Seconds the held token has left by this client's clock, or null without one. */
  expiresIn() {
    if (!this.#current) return null;
    return Math.max(0, (this.#current.validUntil - this.#now()) / 1000);
  }

  /**
   * A usable token: the held one while it is fresh, else a refreshed one.
   *
   * If a refresh ahead of expiry fails while the held token still works, the held token is
   * returned (and an `"error"` event tells why).
   * @returns {Promise<TokenInfo>}
   */
  async token() {
    const held = this.#current;
    const now = this.#now();
    if (held && now < held.refreshAt) return held;
    try {
      return await this.#refresh(held ? "expiring" : "initial");
    } catch (error) {
      const still = this.#current;
      if (still && this.#now() < still.validUntil) {
        this.#report(error, "expiring");
        return still;
      }
      throw error;
    }
  }

  /**
   * Fetch a new token now (joining a refresh already under way), continuing the session.
   * @returns {Promise<TokenInfo>}
   */
  refresh() {
    return this.#refresh("manual");
  }

  /** Stop the refresh timer and forget the token and session (e.g. on sign-out). */
  close() {
    this.#epoch += 1;
    this.#clearTimer();
    this.#current = null;
    this.#inflight = null;
    this.#sessionId = null;
  }

  /**
   * Stream a chat completion; iterate the result for the text deltas.
   *
   * `body` is an OpenAI chat-completions body (`messages`, optional `model`, …); it is copied,
   * never changed, and sent with `stream: true`. Browser-direct requests carry the Behest token,
   * relay requests the identity token; both carry `X-Session-Id`. A 401 before the stream starts
   * refreshes once (a new Behest token, or a new identity token for the relay) and retries once.
   * @param {object} body
   * @param {ChatOptions} [options]
   * @returns {ChatStream}
   */
  chat(body, { via = "direct", includeUsage = false, signal } = {}) {
    if (!body || typeof body !== "object" || !Array.isArray(body.messages)) {
      throw new TypeError("chat needs a body with a messages array");
    }
    if (via !== "direct" && via !== "relay") throw new TypeError('via must be "direct" or "relay"');
    const base = via === "direct" ? this.#options.behestUrl : this.#options.relayUrl;
    if (!base) throw new TypeError(via === "direct" ? "browser-direct chat needs behestUrl" : "relay chat needs relayUrl");
    const request = { ...body, stream: true };
    if (includeUsage) request.stream_options = { ...(body.stream_options || {}), include_usage: true };
    const payload = JSON.stringify(request);
    const url = base.replace(/\/+$/, "") + CHAT_PATH;
    const open = via === "direct"
      ? () => this.#openDirect(url, payload, signal)
      : () => this.#openRelay(url, payload, signal);
    return new ChatStream(open, signal);
  }

  async #openDirect(url, payload, signal) {
    const used = await this.token();
    const first = await this.#post(url, payload, used.token, signal, false);
    if (first.status !== 401) return first;
    await discard(first);
    const fresh = await this.#tokenAfter401(used);
    return this.#post(url, payload, fresh.token, signal, false);
  }

  async #openRelay(url, payload, signal) {
    const first = await this.#post(url, payload, await this.#identityToken(), signal, true);
    if (first.status !== 401) return first;
    await discard(first);
    return this.#post(url, payload, await this.#identityToken(), signal, true);
  }

  async #post(url, payload, bearer, signal, withCredentials) {
    const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
    if (bearer) headers.Authorization = "Bearer " + bearer;
    if (this.#sessionId) headers["X-Session-Id"] = this.#sessionId;
    const init = { method: "POST", headers, body: payload, signal };
    if (withCredentials && this.#options.credentials) init.credentials = this.#options.credentials;
    const response = await this.#send(url, init, signal);
    // The relay opens a session when we had none; keep it so that later calls continue it.
    const echoed = response.headers.get("x-session-id");
    if (echoed && !this.#sessionId) this.#sessionId = echoed;
    return response;
  }

  async #send(url, init, signal) {
    try {
      return await this.#fetch(url, init);
    } catch (error) {
      throw networkFailure(error, signal);
    }
  }

  // Another caller may have refreshed while our request was out: use theirs rather than mint again.
  async #tokenAfter401(used) {
    if (this.#inflight) return this.#inflight;
    const held = this.#current;
    if (held && held.token !== used.token) return held;
    return this.#refresh("unauthorized");
  }

  #refresh(reason) {
    if (!this.#inflight) {
      const epoch = this.#epoch;
      this.#inflight = this.#fetchToken(reason, epoch).finally(() => {
        if (epoch === this.#epoch) this.#inflight = null;
      });
    }
    return this.#inflight;
  }

  async #fetchToken(reason, epoch) {
    const headers = { "Content-Type": "application/json" };
    if (this.#options.headers) Object.assign(headers, await this.#options.headers());
    const identity = await this.#identityToken();
    if (identity) headers.Authorization = "Bearer " + identity;
    const body = {};
    if (this.#options.ttl !== undefined) body.ttl = this.#options.ttl;
    if (this.#sessionId) body.sessionId = this.#sessionId;
    const init = { method: "POST", headers, body: JSON.stringify(body), signal: timeoutSignal(this.#options.tokenTimeout) };
    if (this.#options.credentials) init.credentials = this.#options.credentials;
    const started = this.#now();
    const response = await this.#send(this.#options.tokenUrl, init, null);
    if (!response.ok) throw await errorFrom(response);
    const answer = await response.json().catch(() => null);
    const info = tokenInfo(answer, started, this.#options.refreshMargin);
    if (epoch !== this.#epoch) throw new BehestError("the client was closed during the token fetch", { code: "closed" });
    this.#current = info;
    this.#sessionId = info.sessionId;
    this.#schedule(info.refreshAt);
    this.dispatchEvent(new CustomEvent("token", { detail: { token: info, reason } }));
    return info;
  }

  async #identityToken() {
    if (this.#options.auth === "cookie" || !this.#options.identityToken) return null;
    return await this.#options.identityToken();
  }

  #schedule(at) {
    this.#clearTimer();
    if (!this.#options.autoRefresh) return;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, at - this.#now()));
  }

  #onTimer() {
    this.#timer = null;
    this.#refresh("timer").catch((error) => {
      this.#report(error, "timer");
      const held = this.#current;
      if (held && this.#now() + BACKGROUND_RETRY_MS < held.validUntil) this.#schedule(this.#now() + BACKGROUND_RETRY_MS);
    });
  }

  #clearTimer() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #report(error, reason) {
    this.dispatchEvent(new CustomEvent("error", { detail: { error, reason } }));
  }
}

/**
 * One streamed chat completion: an async iterable of text deltas (iterate it once).
 *
 * The request is sent when iteration starts. While and after iterating, `id`, `model`,
 * `finishReason` and `text` (everything so far) are set; `usage` holds the final usage chunk's
 * counts when it was asked for (`includeUsage`). Breaking out of the loop cancels the stream.
 * Errors: a {@link BehestError} (HTTP error, an `{"error": …}` event, a broken or unfinished
 * stream), or the signal's `AbortError`.
 */
export class ChatStream {
  #open;
  #signal;
  #started = false;
  /** @type {string|null} */ id = null;
  /** @type {string|null} */ model = null;
  /** @type {string|null} */ finishReason = null;
  /** @type {{prompt_tokens: number, completion_tokens: number, total_tokens: number}|null} */ usage = null;
  /** @type {string} */ text = "";

  /** @param {() => Promise<Response>} open @param {AbortSignal} [signal] */
  constructor(open, signal) {
    this.#open = open;
    this.#signal = signal;
  }

  /** @returns {AsyncGenerator<string, void, undefined>} */
  async *[Symbol.asyncIterator]() {
    if (this.#started) throw new TypeError("a ChatStream can be iterated once");
    this.#started = true;
    const response = await this.#open();
    if (!response.ok) throw await errorFrom(response);
    if (!response.body) throw new BehestError("the answer has no body", { status: response.status, code: "invalid_stream" });
    let finished = false;
    for await (const event of readEvents(response.body, this.#signal)) {
      if (event.data === DONE) {
        finished = true;
        break;
      }
      const chunk = parseEventData(event.data);
      if (chunk.error || event.event === "error") throw streamError(chunk.error || chunk, response);
      if (typeof chunk.id === "string") this.id = chunk.id;
      if (typeof chunk.model === "string") this.model = chunk.model;
      if (chunk.usage) this.usage = chunk.usage;
      const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : null;
      if (!choice) continue;
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
      const delta = choice.delta && choice.delta.content;
      if (typeof delta === "string" && delta) {
        this.text += delta;
        yield delta;
      }
    }
    if (!finished) throw new BehestError("the stream ended before [DONE]", { code: "stream_incomplete" });
  }
}

/**
 * @typedef {object} SseEvent One server-sent event.
 * @property {string} event Its type (`"message"` unless an `event:` line said otherwise).
 * @property {string} data Its `data:` lines, joined with "\n".
 * @property {string|null} id Its `id:`, if any.
 */

/**
 * Server-sent events from a response body, as the HTML standard's event-stream parser reads them.
 *
 * Lines end in CRLF, LF or CR (also when a CRLF is split between two reads); `:` lines are
 * comments; one space after the field's colon is dropped; `data:` lines accumulate; a blank line
 * dispatches an event that has data; a last event without its blank line is dropped; UTF-8 split
 * between reads is decoded whole; a leading BOM is skipped.
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} [signal]
 * @returns {AsyncGenerator<SseEvent, void, undefined>}
 */
export async function* readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let pending = "";
  let skipLineFeed = false;
  let started = false;
  let data = [];
  let type = "";
  let id = null;
  let done = false;
  try {
    while (!done) {
      let read;
      try {
        read = await reader.read();
      } catch (error) {
        throw networkFailure(error, signal);
      }
      done = read.done;
      let text = done ? decoder.decode() : decoder.decode(read.value, { stream: true });
      if (!text) continue;
      if (!started) {
        started = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      if (skipLineFeed && text[0] === "\n") text = text.slice(1);
      skipLineFeed = false;
      pending += text;
      const lineEnd = /\r\n|\r|\n/g;
      let start = 0;
      let match;
      while ((match = lineEnd.exec(pending)) !== null) {
        // A CR at the very end may be the first half of a CRLF that the next read completes.
        if (match[0] === "\r" && match.index === pending.length - 1) skipLineFeed = true;
        const line = pending.slice(start, match.index);
        start = lineEnd.lastIndex;
        if (line === "") {
          if (data.length) yield { event: type || "message", data: data.join("\n"), id };
          data = [];
          type = "";
          continue;
        }
        if (line[0] === ":") continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id" && !value.includes("\0")) id = value;
      }
      pending = pending.slice(start);
    }
  } finally {
    if (done) reader.releaseLock();
    else await reader.cancel().catch(() => {});
  }
}

function tokenInfo(answer, started, margin) {
  const valid = answer && typeof answer.token === "string" && answer.token
    && typeof answer.ttl === "number" && answer.ttl > 0
    && typeof answer.sessionId === "string" && answer.sessionId
    && typeof answer.expiresAt === "number";
  if (!valid) throw new BehestError("the token endpoint's answer is not {token, ttl, sessionId, expiresAt}", { code: "invalid_token_response" });
  const ttl = answer.ttl;
  const lead = typeof margin === "number" && margin >= 0 ? margin : Math.min(MAX_DEFAULT_MARGIN_SECONDS, ttl * DEFAULT_MARGIN_FRACTION);
  // The ttl counted from before the request is skew-free and never later than the real expiry.
  const validUntil = started + ttl * 1000;
  const refreshAt = started + Math.max(ttl - lead, Math.min(ttl, MIN_TOKEN_USE_SECONDS)) * 1000;
  return Object.freeze({ token: answer.token, ttl, sessionId: answer.sessionId, expiresAt: answer.expiresAt, validUntil, refreshAt });
}

function parseEventData(data) {
  try {
    const value = JSON.parse(data);
    if (value && typeof value === "object") return value;
  } catch {
    // reported below, with the same error as a non-object
  }
  throw new BehestError("a stream event is not a JSON object", { status: 502, code: "invalid_stream" });
}

function streamError(error, response) {
  const detail = error && typeof error === "object" ? error : { message: String(error) };
  const status = typeof detail.status === "number" ? detail.status : STATUS_BY_OPENAI_TYPE[detail.type] || 0;
  return new BehestError(detail.message || "the stream reported an error", {
    status,
    code: detail.code || detail.type || "stream_error",
    type: detail.type || null,
    traceId: response.headers.get("x-trace-id"),
  });
}

async function errorFrom(response) {
  const text = await response.text().catch(() => "");
  let document = null;
  try {
    document = JSON.parse(text);
  } catch {
    // not JSON: the status says enough
  }
  const error = document && typeof document === "object" ? document.error || document : {};
  const message = (typeof error === "object" && (error.message || error.Message)) || text.slice(0, 200) || response.statusText;
  const retryAfter = Number.parseInt(response.headers.get("retry-after") || "", 10);
  return new BehestError(`${response.status} ${message}`, {
    status: response.status,
    code: (typeof error === "object" && error.code) || "http_" + response.status,
    type: (typeof error === "object" && error.type) || null,
    retryAfter: Number.isNaN(retryAfter) ? null : retryAfter,
    traceId: response.headers.get("x-trace-id"),
  });
}

// The caller's own cancellation stays an AbortError; every other failure becomes a BehestError.
function networkFailure(error, signal) {
  if (signal && signal.aborted) return signal.reason;
  if (error instanceof BehestError || (error && error.name === "AbortError")) return error;
  if (error && error.name === "TimeoutError") return new BehestError("no answer in time", { code: "timeout", cause: error });
  return new BehestError((error && error.message) || "network error", { code: "network_error", cause: error });
}

async function discard(response) {
  await response.body?.cancel().catch(() => {});
}

function timeoutSignal(ms) {
  if (typeof AbortSignal.timeout === "function") return AbortSignal.timeout(ms);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException("timed out", "TimeoutError")), ms);
  return controller.signal;
}
