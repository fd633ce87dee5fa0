// WireGuard specification constants (whitepaper section 6 and 5.4, as in wireguard-go's
// device/constants.go and the Linux kernel's messages.h). Tuning constants of this
// implementation live in tuning.ts. All times are milliseconds.

/** Noise protocol name; HASH of it is the initial chaining key. */
export const NOISE_CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
/** Prologue mixed into the initial hash. */
export const WG_IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
/** Label of the MAC1 key: HASH(LABEL_MAC1 || responder public key). */
export const WG_LABEL_MAC1 = 'mac1----';
/** Label of the cookie encryption key: HASH(LABEL_COOKIE || public key). */
export const WG_LABEL_COOKIE = 'cookie--';

/** The version the UAPI reports as protocol_version. */
export const PROTOCOL_VERSION = 1;

// --- Message counters -----------------------------------------------------------------

/** Spec: a session is renewed after this many messages (2^60). */
export const REKEY_AFTER_MESSAGES = 2 ** 60;
/** Spec: no message is sent or accepted with a counter at or above 2^64 - 2^13 - 1. */
export const REJECT_AFTER_MESSAGES_SPEC = (1n << 64n) - (1n << 13n) - 1n;
/**
 * Limit applied by this implementation: 2^53 - 2^13 - 1.
 *
 * Departure from the spec: counters are plain JS numbers on the hot path (exact up to 2^53,
 * the little-endian u64 is written and read as two u32 halves), so counters at or above this
 * value are treated as beyond the limit: not sent (the keypair is exhausted and a handshake is
 * started) and not accepted (counted as `dropped.counterLimit`). The 2^13 margin keeps the
 * replay window arithmetic below 2^53 like the spec's margin below 2^64. It cannot be reached
 * in practice: a keypair lives at most REJECT_AFTER_TIME (180 s), and 2^53 messages in 180 s is
 * 5 * 10^13 packets per second.
 */
export const REJECT_AFTER_MESSAGES = 2 ** 53 - 2 ** 13 - 1;
/**
 * Counter after which the sender starts a new handshake in this implementation:
 * min(REKEY_AFTER_MESSAGES, REJECT_AFTER_MESSAGES - 2^16), so a rekey is still asked for before
 * the (lowered) reject limit. Unreachable in practice for the same reason as above.
 */
export const REKEY_AFTER_MESSAGES_EFFECTIVE = Math.min(REKEY_AFTER_MESSAGES, REJECT_AFTER_MESSAGES - 2 ** 16);

// --- Timers ---------------------------------------------------------------------------

export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
export const KEEPALIVE_TIMEOUT = 10_000;
export const COOKIE_REFRESH_TIME = 120_000;
/** REKEY_ATTEMPT_TIME / REKEY_TIMEOUT: retries before the initiator gives up. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
/** Retransmission jitter is uniform in [0, REKEY_TIMEOUT_JITTER_MAX_MS) ms, i.e. 0..333 ms. */
export const REKEY_TIMEOUT_JITTER_MAX_MS = 334;
/** An initiation is consumed at most once per this interval per peer (flood protection). */
export const HANDSHAKE_INITIATION_RATE = 1000 / 50;
/** Transport plaintext is zero-padded to a multiple of this. */
export const PADDING_MULTIPLE = 16;

// --- Message types and sizes ----------------------------------------------------------

export const MESSAGE_INITIATION_TYPE = 1;
export const MESSAGE_RESPONSE_TYPE = 2;
export const MESSAGE_COOKIE_REPLY_TYPE = 3;
export const MESSAGE_TRANSPORT_TYPE = 4;

export const KEY_SIZE = 32;
export const HASH_SIZE = 32;
export const MAC_SIZE = 16;
export const AEAD_TAG_SIZE = 16;
export const TAI64N_SIZE = 12;
export const XNONCE_SIZE = 24;
export const COOKIE_SIZE = 16;

export const MESSAGE_INITIATION_SIZE = 148;
export const MESSAGE_RESPONSE_SIZE = 92;
export const MESSAGE_COOKIE_REPLY_SIZE = 64;
export const MESSAGE_TRANSPORT_HEADER_SIZE = 16;
/** Header plus tag: the size of an empty transport message, i.e. a keepalive. */
export const MESSAGE_TRANSPORT_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE;
export const MESSAGE_KEEPALIVE_SIZE = MESSAGE_TRANSPORT_SIZE;
/** Largest UDP payload, hence largest message. */
export const MAX_MESSAGE_SIZE = 65_535;
export const MAX_CONTENT_SIZE = MAX_MESSAGE_SIZE - MESSAGE_TRANSPORT_SIZE;
