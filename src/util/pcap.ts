// Reading pcap capture files (tcpdump -w): the global header's byte order, timestamp precision
// and link type, then the records in file order. The link layer is the caller's business.
import { TgError } from './errors.js';

const PCAP_MAGIC_US = 0xa1b2c3d4;
const PCAP_MAGIC_NS = 0xa1b23c4d;
/** Bytes of a pcap file's global header: a shorter file holds no records. */
export const PCAP_HEADER_SIZE = 24;
const RECORD_HEADER = 16;

export interface PcapRecord {
  /** Capture time in µs (from microsecond or nanosecond stamps). */
  tUs: number;
  /** The captured bytes (a view into the file). */
  data: Buffer;
}

export interface Pcap {
  linktype: number;
  records: PcapRecord[];
}

/**
 * The link type and records of a pcap file of either byte order and stamp precision; a record
 * cut short by the end of the file ends the list. A file that is not pcap is refused.
 */
export function readPcap(file: Buffer): Pcap {
  if (file.length < PCAP_HEADER_SIZE)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'capture: shorter than a pcap header');
  let le: boolean;
  const magicLe = file.readUInt32LE(0);
  const magicBe = file.readUInt32BE(0);
  if (magicLe === PCAP_MAGIC_US || magicLe === PCAP_MAGIC_NS) le = true;
  else if (magicBe === PCAP_MAGIC_US || magicBe === PCAP_MAGIC_NS) le = false;
  else throw new TgError('TG_ERR_INVALID_ARGUMENT', 'capture: not a pcap file');
  const nano = (le ? magicLe : magicBe) === PCAP_MAGIC_NS;
  const u32 = (off: number): number => (le ? file.readUInt32LE(off) : file.readUInt32BE(off));
  const records: PcapRecord[] = [];
  let off = PCAP_HEADER_SIZE;
  while (off + RECORD_HEADER <= file.length) {
    const start = off + RECORD_HEADER;
    const end = start + u32(off + 8);
    if (end > file.length) break;
    records.push({
      tUs: u32(off) * 1e6 + (nano ? u32(off + 4) / 1000 : u32(off + 4)),
      data: file.subarray(start, end),
    });
    off = end;
  }
  return { linktype: u32(20) & 0x0fffffff, records };
}
