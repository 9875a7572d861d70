/**
 * JSON bodies are parsed on the event loop (JSON.parse is synchronous), one per turn of it. Bodies
 * that finish arriving together would otherwise be parsed back to back in one turn: each is bounded
 * (json-cost.ts: about 0.3 s at most here), but 16 such bodies at once held /health/live for 1.2 s.
 * Through the lane, the loop takes its I/O (probes, other requests' bytes) between two parses.
 */
export class ParseLane {
  private readonly waiting: Array<() => void> = []
  private running = false

  /** `work`'s result, computed once every parse queued before it has had its turn. */
  run<T>(work: () => T): Promise<T> {
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
