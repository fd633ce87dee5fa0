// One work queue per host: operations that drive a host's agents run one at a time on that
// host's queue, in arrival order, and operations on different hosts run side by side. An
// operation that spans hosts (a migration, a policy push) holds each of their queues, taken
// in name order so that two such operations never wait on each other in a cycle. A hung or
// slow host therefore delays only the work queued on it.

/** A promise chain run in arrival order. */
class Queue {
  private tail: Promise<unknown> = Promise.resolve();
  /** Operations queued or running. */
  depth = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    this.depth++;
    const wrapped = (): Promise<T> => fn().finally(() => this.depth--);
    const next = this.tail.then(wrapped, wrapped);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export class HostQueues {
  private readonly queues = new Map<string, Queue>();

  /** Runs `fn` holding the queues of `hosts` (duplicates ignored; none: runs at once). */
  run<T>(hosts: readonly string[], fn: () => Promise<T>): Promise<T> {
    const names = [...new Set(hosts)].sort();
    const step = (i: number): Promise<T> =>
      i === names.length ? fn() : this.queue(names[i]).run(() => step(i + 1));
    return step(0);
  }

  /** Operations queued or running per host (hosts with none left out). */
  depths(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [h, q] of this.queues) if (q.depth > 0) out[h] = q.depth;
    return out;
  }

  /** Waits until everything queued so far on every host is done. */
  async drain(): Promise<void> {
    await this.run([...this.queues.keys()], async () => undefined);
  }

  private queue(host: string): Queue {
    let q = this.queues.get(host);
    if (q === undefined) {
      q = new Queue();
      this.queues.set(host, q);
    }
    return q;
  }
}
