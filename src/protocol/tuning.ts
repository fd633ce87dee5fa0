// Tuning constants of this implementation (not part of the WireGuard specification).
// All times are milliseconds.

/** Packets kept per peer while it has no session (wireguard-go: conn.IdealBatchSize). */
export const QUEUE_STAGED_SIZE = 128;
/**
 * How long a staged packet may wait for a session before it is dropped (counted as
 * stagedStale) instead of sent. wireguard-go keeps them until the handshake gives up; a
 * handshake with a live peer takes milliseconds, and one that waits on a stalled peer (a NIC
 * stopped for seconds) would otherwise deliver a burst of packets seconds late when it resumes.
 */
export const QUEUE_STAGED_MAX_AGE = 1_000;
/**
 * How long a datagram may wait in a UDP socket's receive queue (PacketSocket.receiveMaxAge)
 * before the driver drops it (rxStale) instead of handing it to the engine: after a process
 * stall, seconds-old packets are not delivered in a burst.
 */
export const RECEIVE_MAX_AGE = 1_000;
/** How long the engine stays "under load" after the driver or the engine detected load (wireguard-go). */
export const UNDER_LOAD_AFTER_TIME = 1_000;
/**
 * Handshake messages (initiations and responses) arriving per second above which the engine
 * considers itself under load, besides a long handshake queue and what the driver reports.
 */
export const UNDER_LOAD_HANDSHAKES_PER_SECOND = 256;
/** Handshake messages waiting for work, in arrival order (wireguard-go QueueHandshakeSize). */
export const HANDSHAKE_QUEUE_SIZE = 1024;
/** Handshake messages that proved their source (valid MAC2, or a response to our initiation). */
export const HANDSHAKE_PRIORITY_QUEUE_SIZE = 256;
/** Queue depth at which the engine is under load (wireguard-go: an eighth of the queue). */
export const UNDER_LOAD_QUEUE_DEPTH = HANDSHAKE_QUEUE_SIZE / 8;
/**
 * Handshake work per slice, in units: a message that needs Diffie-Hellman work costs
 * HANDSHAKE_DH_COST, one answered with a cookie reply or dropped costs 1. Handshakes share the
 * one thread with the data path; under load the engine works on them only in slices (one per
 * driver turn and tick, Engine.handshakes), each about 1 ms here: a DH message takes about
 * 0.3 ms, a cookie reply about 0.05 ms (the diagnostic of test/unit/protocol-underload, on a
 * noisy shared machine), a batch of 128 transport packets about as long as a slice.
 */
export const HANDSHAKE_WORK_PER_CALL = 16;
export const HANDSHAKE_DH_COST = 6;
/** Handshake rate limit per source address while under load (wireguard-go ratelimiter). */
export const RATELIMIT_PACKETS_PER_SECOND = 20;
export const RATELIMIT_BURST = 5;
/**
 * Cookie replies per source address while under load. One per initiator and two minutes is
 * all an honest one needs; a NIC answers many tenants' initiations from one peer NIC address,
 * hence the burst.
 */
export const COOKIE_REPLIES_PER_SECOND = 10;
export const COOKIE_REPLY_BURST = 10;
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
