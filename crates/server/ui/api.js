// Same-origin API calls: the gateway key, JSON requests, and reading a chat stream (SSE over
// a POST, so fetch + a stream reader rather than EventSource, which can only GET).

const KEY_NAME = "quorate.key";

/** An API failure: the HTTP (or in-stream) status, the server's message and its metadata. */
export class ApiError extends Error {
  constructor(status, message, metadata = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.metadata = metadata;
  }
}

export function isAbort(error) {
  return error?.name === "AbortError";
}

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_NAME);
  } catch {
    return null; // storage can be disabled; then the gateway must be open
  }
}

function storeKey(key) {
  try {
    sessionStorage.setItem(KEY_NAME, key);
  } catch {
    /* nothing to do: the next call will ask again */
  }
}

function withAuth(init = {}) {
  const headers = new Headers(init.headers || {});
  const key = storedKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return { ...init, headers };
}

/** The `{"error": {...}}` body of a failed response as an ApiError (any body works). */
async function errorFrom(response) {
  let message = `${response.status} ${response.statusText || "error"}`.trim();
  let metadata = null;
  try {
    const body = await response.json();
    if (body?.error?.message) message = String(body.error.message);
    metadata = body?.error?.metadata ?? null;
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message, metadata);
}

// ---- the key dialog --------------------------------------------------------------------

let pendingKey = null; // one dialog for every call that got a 401 at the same time

/** Shows #key-dialog; resolves true once a key is saved, false when dismissed. */
function askForKey(reason) {
  if (pendingKey) return pendingKey;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const note = document.getElementById("key-note");
  if (!dialog || !form || !input) return Promise.resolve(false);

  pendingKey = new Promise((resolve) => {
    const finish = (saved) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      pendingKey = null;
      resolve(saved);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        input.focus();
        return;
      }
      storeKey(key);
      input.value = "";
      dialog.removeEventListener("close", onClose);
      dialog.close();
      finish(true);
    };
    const onClose = () => finish(false);
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    if (note) note.textContent = reason || "";
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return pendingKey;
}

/** fetch with the key; a 401 asks for a key and tries again; non-2xx throws ApiError. */
async function send(path, init = {}) {
  for (;;) {
    const response = await fetch(path, withAuth(init));
    if (response.status === 401) {
      const error = await errorFrom(response);
      if (await askForKey(error.message)) continue;
      throw error;
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }
}

/** GET a JSON API path; `params` with empty values are left out of the query. */
export async function getJSON(path, params = {}, { signal } = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const url = query.toString() ? `${path}?${query}` : path;
  const response = await send(url, { signal, headers: { Accept: "application/json" } });
  return response.json();
}

/**
 * POSTs a streaming chat completion and calls onChunk(json) for every `data:` frame until
 * `[DONE]`. An `{"error": ...}` frame ends the stream and is thrown as an ApiError.
 */
export async function streamChat(body, { signal, onChunk }) {
  const response = await send("/v1/chat/completions", {
    method: "POST",
    signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.body) throw new ApiError(0, "The browser gave no stream to read.");

  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (handleFrame(frame, onChunk) === "done") return;
      }
    }
    if (buffer.trim()) handleFrame(buffer, onChunk);
  } finally {
    reader.releaseLock();
  }
}

/** One SSE frame: its `data:` lines joined; comment lines (`:`) are keep-alives. */
function handleFrame(frame, onChunk) {
  const data = frame
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  if (!data) return "skip";
  if (data.trim() === "[DONE]") return "done";
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch {
    return "skip"; // a frame that is not JSON carries nothing we can show
  }
  if (chunk?.error) {
    // On /v1 the status is `status` (`code` is OpenAI's name for the error).
    const { status, message, metadata } = chunk.error;
    throw new ApiError(status ?? 0, message || "The stream failed.", metadata ?? null);
  }
  onChunk(chunk);
  return "chunk";
}
