/**
 * V8's full collection, when node runs with --expose-gc (the Docker images set it); undefined
 * otherwise. Large Buffers (a decoder's full-size copy, a request body) are freed only when V8
 * collects the objects that hold them, and a process that has gone idle may not collect for tens
 * of seconds: their memory stays in RSS meanwhile, and the next burst allocates its own beside it.
 * The callers collect once, right after such memory became garbage.
 */
export const collectGarbage = (globalThis as { gc?: () => void }).gc
