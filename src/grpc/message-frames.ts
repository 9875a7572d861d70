/**
 * Follows the gRPC messages in a call's request bytes as they arrive, chunk by chunk: each message
 * is a compressed flag, a 4-byte big-endian length and that many bytes. The reader only counts; it
 * keeps no bytes (grpc-js decodes them). Its callbacks tell when a message starts (its length is
 * known once its 5-byte prefix is in) and when its last byte has arrived, which is what admission
 * needs to hold a message's size before the message itself is in memory.
 */

export interface MessageFrameEvents {
  /** A message's prefix is in: `bytes` more will follow (the message, without its prefix). */
  start(bytes: number, compressed: boolean): void
  /** The message started last is wholly in. */
  end(): void
}

const PREFIX_BYTES = 5

export class MessageFrames {
  private readonly prefix = Buffer.alloc(PREFIX_BYTES)
  private prefixFilled = 0
  /** Bytes of the current message still to come; -1 between messages. */
  private remaining = -1

  constructor(private readonly events: MessageFrameEvents) {}

  /** True while a message has started and not ended. */
  get inMessage(): boolean {
    return this.remaining >= 0
  }

  /** Bytes of the current message still to come (0 between messages). */
  get remainingBytes(): number {
    return Math.max(0, this.remaining)
  }

  write(chunk: Uint8Array): void {
    let offset = 0
    while (offset < chunk.byteLength) {
      if (this.remaining < 0) {
        const take = Math.min(PREFIX_BYTES - this.prefixFilled, chunk.byteLength - offset)
        this.prefix.set(chunk.subarray(offset, offset + take), this.prefixFilled)
        this.prefixFilled += take
        offset += take
        if (this.prefixFilled < PREFIX_BYTES) return
        this.prefixFilled = 0
        this.remaining = this.prefix.readUInt32BE(1)
        this.events.start(this.remaining, this.prefix[0] !== 0)
      } else {
        const take = Math.min(this.remaining, chunk.byteLength - offset)
        this.remaining -= take
        offset += take
      }
      if (this.remaining === 0) {
        this.remaining = -1
        this.events.end()
      }
    }
  }
}
