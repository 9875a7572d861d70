/**
 * FIFO ring buffer, power-of-two capacity, grows by doubling: O(1) push and shift, no array
 * shifting, and slots are cleared on shift so a value taken out can be collected.
 */
export class Ring<T> {
  private slots: (T | undefined)[] = new Array(16)
  private head = 0
  private size = 0

  get length(): number {
    return this.size
  }

  push(value: T): void {
    if (this.size === this.slots.length) this.grow()
    this.slots[(this.head + this.size) & (this.slots.length - 1)] = value
    this.size++
  }

  peek(): T | undefined {
    return this.size === 0 ? undefined : this.slots[this.head]
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined
    const value = this.slots[this.head]
    this.slots[this.head] = undefined
    this.head = (this.head + 1) & (this.slots.length - 1)
    this.size--
    return value
  }

  private grow(): void {
    const next: (T | undefined)[] = new Array(this.slots.length * 2)
    for (let i = 0; i < this.size; i++) next[i] = this.slots[(this.head + i) & (this.slots.length - 1)]
    this.slots = next
    this.head = 0
  }
}
