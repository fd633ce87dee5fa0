// Bounded parallelism for iproute2 calls: the machine is small and shared, so at most a
// few processes at a time.

/**
 * Maps `fn` over `items` with at most `limit` calls in flight; results keep the input
 * order. After the first failure no new call starts, and the first error is thrown once
 * the calls in flight have ended (so nothing keeps running behind a rollback).
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure.err;
  return out;
}
