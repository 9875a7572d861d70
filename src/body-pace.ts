/**
 * How fast a request's bytes must arrive while they hold a share of the body budget
 * (body-budget.ts) that another request needs. A share is taken for a declared length before the
 * bytes come (an HTTP `Content-Length`, a gRPC message's 5-byte prefix), so a client could hold
 * the budget with bytes it never sends: six gRPC streams that sent a prefix declaring 38 MB each
 * and nothing more (30 bytes in all) had every /classify answered 429 `BODY_BUDGET_FULL` for the
 * 30 s of --request-timeout-ms, and again each time they were sent anew.
 *
 * The pace is the one --request-timeout-ms already sets: after a grace, the bytes must keep up
 * with a straight line to the whole length at the timeout. A client sending at a steady rate that
 * finishes within the timeout is never behind it, and one that is behind would not have finished
 * in time anyway. A request that finds no room takes the shares of bodies behind their pace
 * (BodyBudget.makeRoom), so holding the budget costs a client the bandwidth of filling it, or a
 * fresh announcement every grace. Without contention nothing changes: the timeout alone applies.
 */

/**
 * Time a share may see no bytes at first: a round trip for the flow-control window a message
 * waiting for room had used up, and a busy client. Legitimate ModelInfer batches whose stream had
 * waited for room were judged behind 150–200 ms after their grant, in the attack suite's
 * every-budget run, with no grace.
 */
export const BODY_PACE_GRACE_MS = 1000

/**
 * How long a request may wait for room in the budget having sent less than WAITING_SHOWN_BYTES of
 * what it announced before it is refused when its turn comes, instead of granted a share. While it
 * waits its body is not read, but a client sends its start at once (a gRPC message what its
 * flow-control window allows, 64 KiB, held unread in the paused HTTP/2 stream; an HTTP body what
 * the request's unread buffer takes): one that shows less after a second is not sending.
 * Granted, each held a share for its pace's grace before another request could take it back, and
 * the waiting line went ahead of every upload: 60 gRPC prefixes on one connection (about 3 KB)
 * kept 52 of 56 /classify uploads out over 12 s (attacker, round 6b).
 */
export const SILENT_WAIT_MS = 1000

/**
 * What a client that is sending has sent of its body within SILENT_WAIT_MS, whatever its link:
 * less than an HTTP request's unread buffer (16 KiB in Node 20) and a gRPC stream's flow-control
 * window (64 KiB) take. With "none of it" as the rule, announcements sending one byte each, renewed
 * every second (24 gRPC streams a second, about 2 KB/s), still held uploads out (4 of 5 refused after
 * waiting 3 s); now each costs the attacker 16 KiB.
 */
export const WAITING_SHOWN_BYTES = 16 * 1024

/**
 * Pure: whether a request whose turn in the budget's line has come after `waitedMs` is refused
 * rather than granted, having shown `shownBytes` of the `announcedBytes` it can have sent while
 * waiting (its announced length, or less where the door holds less unread).
 */
export function silentAtItsTurn(announcedBytes: number, shownBytes: number, waitedMs: number): boolean {
  return waitedMs >= SILENT_WAIT_MS && shownBytes < Math.min(announcedBytes, WAITING_SHOWN_BYTES)
}

/**
 * Pure: the bytes of `lengthBytes` due `elapsedMs` after the share was granted, for the whole to
 * arrive within `windowMs`: none during the grace (at most half the window), then a straight line.
 */
export function bytesDue(lengthBytes: number, elapsedMs: number, windowMs: number, graceMs = BODY_PACE_GRACE_MS): number {
  const grace = Math.min(graceMs, windowMs / 2)
  if (elapsedMs <= grace) return 0
  return Math.min(lengthBytes, Math.floor((lengthBytes * (elapsedMs - grace)) / (windowMs - grace)))
}

export interface BodyArrival {
  /** The bytes the share was taken for. */
  readonly lengthBytes: number
  /** --request-timeout-ms: the time the whole may take. */
  readonly windowMs: number
  /** The bytes that have arrived since the share was granted. */
  readonly received: () => number
  /** Bytes `received` may miss (what came with the head before the count began). */
  readonly slackBytes: number
}

/** A share's bytes, timed from now: `behind()` says whether they are behind the pace. */
export function bodyPace(arrival: BodyArrival, now: () => number = () => performance.now()): { behind(): boolean } {
  const started = now()
  return {
    behind: () => arrival.received() + arrival.slackBytes < bytesDue(arrival.lengthBytes, now() - started, arrival.windowMs)
  }
}
