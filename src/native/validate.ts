// The native batch calls' argument checks, in TypeScript, so that the fakes reject exactly
// what the addon rejects (same error class and code), and Node-style errno errors for
// the fakes' simulated failures.
import { ENDPOINT_OFFSET_FAMILY, ENDPOINT_SIZE } from '../net/endpoint.js';

export function argTypeError(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' });
}

export function argRangeError(message: string): RangeError {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' });
}

// Linux errno values (os.constants.errno lacks EBADFD) and strerror texts for the codes
// the fakes produce.
const ERRNO: Record<string, [number, string]> = {
  EIO: [5, 'Input/output error'],
  EBADF: [9, 'Bad file descriptor'],
  ENOMEM: [12, 'Cannot allocate memory'],
  ENODEV: [19, 'No such device'],
  EINVAL: [22, 'Invalid argument'],
  EBADFD: [77, 'File descriptor in bad state'],
  ENOTSOCK: [88, 'Socket operation on non-socket'],
  EMSGSIZE: [90, 'Message too long'],
  EAFNOSUPPORT: [97, 'Address family not supported by protocol'],
  EADDRINUSE: [98, 'Address already in use'],
  ENETUNREACH: [101, 'Network is unreachable'],
  ENOBUFS: [105, 'No buffer space available'],
};

export type ErrnoName = keyof typeof ERRNO;

/** An Error shaped like the addon's (and Node's) system errors: code, errno, syscall. */
export function errnoError(
  code: string,
  syscall: string,
): Error & { code: string; errno: number; syscall: string } {
  const [num, text] = ERRNO[code] ?? [0, 'Unknown error'];
  return Object.assign(new Error(`${code}: ${text}, ${syscall}`), { code, errno: -num, syscall });
}

export function checkBytes(v: unknown, what: string): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) throw argTypeError(`${what} must be a Buffer or Uint8Array`);
}

export function checkU32Array(v: unknown, what: string): asserts v is Uint32Array {
  if (!(v instanceof Uint32Array)) throw argTypeError(`${what} must be a Uint32Array`);
}

export function checkU32(v: unknown, what: string): asserts v is number {
  if (typeof v !== 'number') throw argTypeError(`${what} must be a number`);
  if (!(Number.isInteger(v) && v >= 0 && v <= 0xffffffff))
    throw argRangeError(`${what} must be an integer in [0, 2^32), got ${v}`);
}

/** Checks of readBatch/recvBatch: max slots fit in the slab, headroom leaves room for data. */
export function checkSlots(
  slab: unknown,
  slotSize: unknown,
  headroom: unknown,
  max: unknown,
  lengths: unknown,
): void {
  checkBytes(slab, 'slab');
  checkU32(slotSize, 'slotSize');
  checkU32(headroom, 'headroom');
  checkU32(max, 'max');
  checkU32Array(lengths, 'lengths');
  if (headroom >= slotSize)
    throw argRangeError(`headroom (${headroom}) must be smaller than slotSize (${slotSize})`);
  if (max > lengths.length) throw argRangeError(`max (${max}) exceeds lengths.length (${lengths.length})`);
  if (max * slotSize > slab.length)
    throw argRangeError(
      `max (${max}) slots of ${slotSize} bytes need ${max * slotSize} bytes, slab has ${slab.length}`,
    );
}

/** Checks of writeBatch/sendBatch: every [offsets[i], offsets[i]+lengths[i]) lies in the slab. */
export function checkExtents(slab: unknown, offsets: unknown, lengths: unknown, count: unknown): void {
  checkBytes(slab, 'slab');
  checkU32Array(offsets, 'offsets');
  checkU32Array(lengths, 'lengths');
  checkU32(count, 'count');
  if (count > offsets.length || count > lengths.length)
    throw argRangeError(
      `count (${count}) exceeds offsets.length (${offsets.length}) or lengths.length (${lengths.length})`,
    );
  for (let i = 0; i < count; i++) {
    if (offsets[i] + lengths[i] > slab.length)
      throw argRangeError(
        `packet ${i} at offset ${offsets[i]}, length ${lengths[i]} ends past the slab (${slab.length} bytes)`,
      );
  }
}

/** Checks that `endpoints` holds `count` endpoints, each of family 4 or 6. */
export function checkEndpoints(endpoints: unknown, count: number, what: string): asserts endpoints is Buffer {
  checkBytes(endpoints, 'endpoints');
  if (count * ENDPOINT_SIZE > endpoints.length)
    throw argRangeError(
      `endpoints must hold ${what} (${count}) x ${ENDPOINT_SIZE} bytes, has ${endpoints.length}`,
    );
}

export function checkEndpointFamilies(endpoints: Uint8Array, count: number): void {
  for (let i = 0; i < count; i++) {
    const family = endpoints[i * ENDPOINT_SIZE + ENDPOINT_OFFSET_FAMILY];
    if (family !== 4 && family !== 6)
      throw argTypeError(`endpoint ${i} has family ${family}, expected 4 or 6`);
  }
}
