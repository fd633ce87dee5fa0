// The WireGuard protocol engine: public surface for drivers, the UAPI and the NIC agent.

export { JsTransportAead, type TransportAead } from './aead.js';
export { AllowedIps, type IpPrefix } from './allowedips.js';
export type { DatagramBatch, OutgoingDatagrams, PacketBatch, TunBatch } from './batch.js';
export * from './constants.js';
export { DropCounters, EngineCounters } from './counters.js';
export {
  generatePrivateKey,
  keyFingerprint,
  keyFromBase64,
  keyFromHex,
  keyToBase64,
  keyToHex,
  publicKeyOf,
} from './crypto.js';
export {
  ENDPOINT_SIZE,
  endpointAddress,
  endpointFamily,
  endpointPort,
  endpointToString,
  makeEndpoint,
} from './endpoint.js';
export {
  Engine,
  type EngineOptions,
  type IdentityInfo,
  type IdentityOptions,
  type InboundResult,
  type OutboundResult,
  type PeerConfig,
  type PeerInfo,
  type PeerUpdate,
  paddingSize,
  type SessionInfo,
} from './engine.js';
