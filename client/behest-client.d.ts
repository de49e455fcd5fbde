// Types for behest-client.js (hand-written; the module itself carries the same in JSDoc).

export interface TokenInfo {
  readonly token: string;
  readonly ttl: number;
  readonly sessionId: string;
  /** Unix seconds, by the server's clock. */
  readonly expiresAt: number;
  /** Milliseconds, by this client's clock: request start + ttl. */
  readonly validUntil: number;
  /** Milliseconds, by this client's clock: when it is refreshed. */
  readonly refreshAt: number;
}

export interface ClientOptions {
  tokenUrl: string;
  /** "bearer" (default): identityToken() as Authorization; "cookie": the browser's session cookie, credentials "include". */
  auth?: "bearer" | "cookie";
  identityToken?: () => string | null | Promise<string | null>;
  headers?: () => Record<string, string> | Promise<Record<string, string>>;
  credentials?: RequestCredentials;
  behestUrl?: string;
  relayUrl?: string;
  ttl?: number;
  sessionId?: string;
  refreshMargin?: number;
  autoRefresh?: boolean;
  tokenTimeout?: number;
  fetch?: typeof fetch;
  now?: () => number;
}

export interface ChatOptions {
  via?: "direct" | "relay";
  includeUsage?: boolean;
  signal?: AbortSignal;
}

export interface ChatBody {
  messages: Array<{ role: string; content?: unknown; [field: string]: unknown }>;
  model?: string;
  [field: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [field: string]: unknown;
}

export type RefreshReason = "initial" | "expiring" | "timer" | "unauthorized" | "manual";

export class BehestError extends Error {
  constructor(message: string, details?: {
    status?: number; code?: string; type?: string | null; retryAfter?: number | null; traceId?: string | null; cause?: unknown;
  });
  readonly status: number;
  readonly code: string;
  readonly type: string | null;
  readonly retryAfter: number | null;
  readonly traceId: string | null;
}

export class ChatStream implements AsyncIterable<string> {
  id: string | null;
  model: string | null;
  finishReason: string | null;
  usage: Usage | null;
  text: string;
  [Symbol.asyncIterator](): AsyncGenerator<string, void, undefined>;
}

export class BehestClient extends EventTarget {
  constructor(options: ClientOptions);
  readonly current: TokenInfo | null;
  readonly sessionId: string | null;
  expiresIn(): number | null;
  token(): Promise<TokenInfo>;
  refresh(): Promise<TokenInfo>;
  close(): void;
  chat(body: ChatBody, options?: ChatOptions): ChatStream;
  addEventListener(type: "token", listener: (event: CustomEvent<{ token: TokenInfo; reason: RefreshReason }>) => void,
                   options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "error", listener: (event: CustomEvent<{ error: unknown; reason: RefreshReason }>) => void,
                   options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                   options?: boolean | AddEventListenerOptions): void;
}

export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
}

export function readEvents(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SseEvent, void, undefined>;
