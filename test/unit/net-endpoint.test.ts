// The endpoint record codec shared by the native socket, the driver and the engine.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeEndpoint,
  ENDPOINT_SIZE,
  encodeAddressPort,
  encodeEndpoint,
  endpointAddress,
  endpointEquals,
  endpointFamily,
  endpointPort,
} from '../../src/net/endpoint.js';
import { TgError } from '../../src/util/errors.js';

const bytes = (hex: string) => Buffer.from(hex.replace(/\s+/g, ''), 'hex');

test('encodes to the exact wire layout (no source: flags 0, source field zero)', () => {
  const table: [string, string][] = [
    ['1.2.3.4:51820', '04 00 ca6c 01020304 000000000000000000000000 00000000000000000000000000000000'],
    ['0.0.0.0:0', '04 00 0000 00000000 000000000000000000000000 00000000000000000000000000000000'],
    [
      '255.255.255.255:65535',
      '04 00 ffff ffffffff 000000000000000000000000 00000000000000000000000000000000',
    ],
    ['[fd00::1]:51820', '06 00 ca6c fd000000000000000000000000000001 00000000000000000000000000000000'],
    ['[::]:1', '06 00 0001 00000000000000000000000000000000 00000000000000000000000000000000'],
    [
      '[2001:db8:0:0:1:0:0:1]:443',
      '06 00 01bb 20010db8000000000001000000000001 00000000000000000000000000000000',
    ],
    [
      '[::ffff:198.18.0.1]:9',
      '04 00 0009 c6120001 000000000000000000000000 00000000000000000000000000000000',
    ],
    [
      '[64:ff9b::198.18.0.1]:9',
      '06 00 0009 0064ff9b0000000000000000c6120001 00000000000000000000000000000000',
    ],
  ];
  for (const [text, hex] of table) assert.deepEqual(encodeEndpoint(text), bytes(hex), text);
});

test('decodes to canonical text (RFC 5952 for IPv6)', () => {
  const table: [string, string][] = [
    ['1.2.3.4:51820', '1.2.3.4:51820'],
    ['[FD00:0:0:0:0:0:0:1]:51820', '[fd00::1]:51820'],
    ['[2001:db8:0:0:1:0:0:1]:443', '[2001:db8::1:0:0:1]:443'],
    ['[2001:db8:0:1:1:1:1:1]:1', '[2001:db8:0:1:1:1:1:1]:1'],
    ['[::]:0', '[::]:0'],
    ['[::1]:2', '[::1]:2'],
    ['[fe80::]:3', '[fe80::]:3'],
    ['[::ffff:10.1.2.3]:4', '10.1.2.3:4'],
  ];
  for (const [text, canonical] of table) assert.equal(decodeEndpoint(encodeEndpoint(text)), canonical, text);
});

test('encodes in place at an offset and reads fields back', () => {
  const buf = Buffer.alloc(3 * ENDPOINT_SIZE, 0xee);
  encodeEndpoint('[fd00::2]:7', buf, ENDPOINT_SIZE);
  encodeAddressPort('10.0.0.1', 65000, buf, 2 * ENDPOINT_SIZE);
  assert.equal(buf[0], 0xee, 'neighbouring bytes untouched');
  assert.equal(decodeEndpoint(buf, ENDPOINT_SIZE), '[fd00::2]:7');
  assert.equal(endpointFamily(buf, 2 * ENDPOINT_SIZE), 4);
  assert.equal(endpointPort(buf, 2 * ENDPOINT_SIZE), 65000);
  assert.ok(endpointEquals(buf, ENDPOINT_SIZE, encodeEndpoint('[fd00::2]:7'), 0));
  assert.ok(!endpointEquals(buf, ENDPOINT_SIZE, encodeEndpoint('[fd00::2]:8'), 0));
});

test('rejects malformed text with TG_ERR_INVALID_ARGUMENT', () => {
  const bad = [
    '1.2.3.4',
    '1.2.3.4:',
    '1.2.3.4:65536',
    '1.2.3.4:-1',
    '1.2.3.4:80x',
    '256.1.1.1:1',
    'fd00::1:51820',
    '[fd00::1]51820',
    '[fd00::1',
    '[fe80::1%eth0]:1',
    '[nothex::1]:1',
    'example.com:80',
    ':80',
  ];
  for (const text of bad)
    assert.throws(
      () => encodeEndpoint(text),
      (err) => err instanceof TgError && err.code === 'TG_ERR_INVALID_ARGUMENT',
      text,
    );
  assert.throws(() => encodeAddressPort('1.2.3.4', 1.5), TgError);
  assert.throws(() => encodeEndpoint('1.2.3.4:1', Buffer.alloc(19)), RangeError);
});

test('rejects undecodable bytes', () => {
  assert.throws(() => decodeEndpoint(Buffer.alloc(ENDPOINT_SIZE)), TgError, 'family 0');
  assert.throws(() => decodeEndpoint(Buffer.alloc(ENDPOINT_SIZE - 1)), RangeError);
  assert.throws(() => endpointAddress(Buffer.from([9, ...Buffer.alloc(19)])), TgError);
});
