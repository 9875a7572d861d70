/**
 * Large JSON bodies of the routes outside /v2 (the batch endpoint's base64 images, cheap to parse
 * as strings) are parsed on the event loop (JSON.parse is synchronous) one per turn of it; /v2's
 * inference headers, whose JSON tensors are numbers, go to worker threads (header-parse-pool.ts).
 * Bodies that finish arriving together would otherwise be parsed back to back in one turn: each is
 * bounded (json-cost.ts: about 0.3 s at most here), but 16 such bodies at once held /health/live
 * for 1.2 s. Through the lane, the loop takes its I/O (probes, other requests' bytes) between two
 * parses. Small bodies (a V2 binary request's JSON header, a small JSON request) are parsed at
 * once: they cost JSON.parse a fraction of a millisecond, and waiting a turn each would cap
 * how many requests the loop could take.
 */

/**
 * JSON bytes parsed at once: 16 KiB took JSON.parse 0.05 ms as numbers, 0.18 ms as distinct keys
 * and 0.20 ms as `[0],` nested arrays here (best of 200).
 */
export const INLINE_PARSE_BYTES = 16 * 1024

export class ParseLane {
  private readonly waiting: Array<() => void> = []
  private running = false

  /**
   * `work`'s result: at once for a body of at most INLINE_PARSE_BYTES, else once every large parse
   * queued before it has had its turn.
   */
  run<T>(bytes: number, work: () => T): Promise<T> {
    if (bytes <= INLINE_PARSE_BYTES) {
      try {
        return Promise.resolve(work())
      } catch (err) {
        return Promise.reject(err as Error)
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.waiting.push(() => {
        try {
          resolve(work())
        } catch (err) {
          reject(err as Error)
        }
      })
      if (!this.running) {
        this.running = true
        setImmediate(() => this.next())
      }
    })
  }

  /** Runs one parse; the next waits for the next turn (an immediate queued from an immediate runs after the loop's I/O). */
  private next(): void {
    const work = this.waiting.shift()
    if (work === undefined) {
      this.running = false
      return
    }
    work()
    setImmediate(() => this.next())
  }
}
