// Tuning constants of this implementation (not part of the WireGuard specification).
// All times are milliseconds.

/** Packets kept per peer while it has no session (wireguard-go: conn.IdealBatchSize). */
export const QUEUE_STAGED_SIZE = 128;
/** How long the engine stays "under load" after the driver or the engine detected load. */
export const UNDER_LOAD_AFTER_TIME = 1_000;
/**
 * Handshake messages (initiations and responses) per second above which the engine considers
 * itself under load on its own, in addition to what the driver reports.
 */
export const UNDER_LOAD_HANDSHAKES_PER_SECOND = 256;
/**
 * Handshake messages a second that get any work while under load; the rest are dropped
 * (counted as handshakeBudget) so that a flood cannot starve the data path sharing the thread.
 */
export const HANDSHAKE_BUDGET_PER_SECOND = 2_048;
/** Handshake rate limit per source address while under load (wireguard-go ratelimiter). */
export const RATELIMIT_PACKETS_PER_SECOND = 20;
export const RATELIMIT_BURST = 5;
/** Rate limiter entries idle longer than this are removed on tick. */
export const RATELIMIT_GC_TIME = 1_000;
/** Bound of the rate limiter table; new sources are refused while it is full. */
export const RATELIMIT_MAX_ENTRIES = 65_536;
/** Granularity of the timer wheel; the driver's tick interval should not be finer. */
export const TIMER_WHEEL_GRANULARITY = 100;
/** Slots of the timer wheel (one turn = SLOTS * GRANULARITY = 51.2 s). */
export const TIMER_WHEEL_SLOTS = 512;
/** Peers per identity, as in wireguard-go (MaxPeers). */
export const MAX_PEERS_PER_IDENTITY = 1 << 16;
/** Initial capacity of the engine's reusable batch arrays; they grow when a batch is larger. */
export const INITIAL_BATCH_CAPACITY = 256;
/** Initial size of the slab holding engine-originated datagrams; grows on demand. */
export const INITIAL_CONTROL_SLAB_SIZE = 4 * 1024;
/** Default tunnel MTU used to cap transport padding (wireguard-go's calculatePaddingSize). */
export const DEFAULT_MTU = 1420;
