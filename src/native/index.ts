// The native I/O layer: what Node has no API for (TUN devices, batched UDP, fd readiness
// on the event loop, batched AEAD with node's OpenSSL, prctl), behind the interfaces in
// types.ts, plus in-memory fakes for tests (fake.ts, imported separately). The endpoint record
// endpoint the sockets read and write is src/net/endpoint.ts.

export type { AeadImplementation, CryptoPoolStats } from './aead.js';
export {
  aeadImplementation,
  CRYPTO_THREADS_ENV,
  cryptoPoolStats,
  cryptoThreadsDefault,
  NativeAead,
  setCryptoThreads,
} from './aead.js';
export { DEFAULT_BATCH, DEFAULT_SLOT_SIZE, PacketBatch, WG_HEADROOM } from './batch.js';
export { loadNative } from './binding.js';
export { isDumpable, setDumpable } from './dumpable.js';
export { MAX_IFNAME_LEN, NativeTunDevice, type TunOptions } from './tun.js';
export type { IoStats, PacketIo, PacketSocket, ReadableCallback, TunDevice } from './types.js';
export { DEFAULT_SOCKET_BUFFER, NativeUdpSocket, type UdpOptions } from './udp.js';
