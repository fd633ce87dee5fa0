// Engine counters. Every reason a packet is dropped has its own named counter; nothing on the
// packet path throws. Plain classes with fixed fields keep the hot-path increments monomorphic.

export class DropCounters {
  /** Too short, wrong size for its type, bad offsets, or an unparsable inner packet on send. */
  malformed = 0;
  /** Message type not 1..4. */
  unknownType = 0;
  /** Larger than the largest UDP payload. */
  oversized = 0;
  /** No room behind a packet in the slab for padding and the tag. */
  noRoom = 0;
  /** Handshake message whose MAC1 matches no local identity. */
  badMac1 = 0;
  /** Under load, a handshake message without a valid MAC2: answered with a cookie reply, no DH. */
  cookieRequired = 0;
  /**
   * Under load, a handshake message without a valid MAC2 from an address that has had its
   * cookie replies (COOKIE_REPLIES_PER_SECOND): dropped unanswered, before any other work.
   */
  cookieRateLimited = 0;
  /** The handshake queue (or its priority ring) was full: dropped unread. */
  handshakeQueueFull = 0;
  /** Under load, more MAC2-valid handshake messages from one address than the rate limit allows. */
  rateLimited = 0;
  /** Handshake message that failed to decrypt or carried an invalid public key. */
  badHandshake = 0;
  /** Initiation from a static key that is not a peer of the targeted identity. */
  unknownPeer = 0;
  /** Initiation whose timestamp is not newer than the last one from that peer. */
  handshakeReplay = 0;
  /** Initiation less than HANDSHAKE_INITIATION_RATE after the previous one from that peer. */
  handshakeFlood = 0;
  /** Response for a handshake that is not waiting for one. */
  handshakeState = 0;
  /** Cookie reply that did not decrypt. */
  badCookieReply = 0;
  /** Receiver index unknown (or not of the expected kind). */
  unknownIndex = 0;
  /** Transport message under a keypair older than REJECT_AFTER_TIME. */
  expiredKeypair = 0;
  /** Transport counter at or above REJECT_AFTER_MESSAGES. */
  counterLimit = 0;
  /** Transport message whose tag did not verify. */
  badAuth = 0;
  /** Authenticated transport counter already seen or older than the window. */
  replay = 0;
  /** Decrypted packet that is not a consistent IPv4/IPv6 packet. */
  malformedInner = 0;
  /** Decrypted packet whose source address is not routed to the peer it came from. */
  badInnerSource = 0;
  /** Outbound packet whose destination no peer's allowed IPs cover. */
  noRoute = 0;
  /** Outbound packet for a peer without an endpoint. */
  noEndpoint = 0;
  /** Oldest staged packet pushed out of a full per-peer queue. */
  stagedOverflow = 0;
  /** Staged packets dropped when a handshake gave up or keys were zeroed. */
  stagedFlushed = 0;
  /** Staged packets older than QUEUE_STAGED_MAX_AGE when a session came (dropped, not sent late). */
  stagedStale = 0;
  /** Unexpected exception caught at the packet-path boundary (should stay 0). */
  internal = 0;
}

export class EngineCounters {
  readonly dropped = new DropCounters();
  txPackets = 0;
  rxPackets = 0;
  keepalivesSent = 0;
  keepalivesReceived = 0;
  handshakeInitiationsSent = 0;
  handshakeResponsesSent = 0;
  handshakesCompleted = 0;
  cookieRepliesSent = 0;
  cookieRepliesConsumed = 0;
  /** Cookie replies sent on arrival because the queue was full (counted in cookieRepliesSent too). */
  cookieRepliesOnArrival = 0;
  /** Initiations sent again at once, with MAC2, after a cookie reply answered the previous one. */
  cookieRetries = 0;
  /** Handshake messages admitted ahead of the queue (valid MAC2, or a response to our initiation). */
  handshakesPrioritised = 0;
  /** Times the engine went under load (queue depth, handshake rate, or the driver's signal). */
  underLoadEntered = 0;
  roamed = 0;
}
