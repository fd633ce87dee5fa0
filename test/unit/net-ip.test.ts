import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatIPv4Number,
  formatIPv6,
  parseCidr,
  parseEndpoint,
  parseIPv4,
  parseIPv4Number,
  parseIPv6,
  parseIp,
} from '../../src/net/ip.js';

test('IPv4: dotted quads only, no leading zeros, octets up to 255', () => {
  assert.deepEqual(parseIPv4('100.64.1.7'), new Uint8Array([100, 64, 1, 7]));
  assert.deepEqual(parseIPv4('0.0.0.0'), new Uint8Array(4));
  for (const bad of [
    '1.2.3',
    '1.2.3.4.5',
    '01.2.3.4',
    '256.1.1.1',
    '1.2.3.-4',
    '1.2.3.4 ',
    '',
    'a.b.c.d',
    '1..2.3',
  ]) {
    assert.equal(parseIPv4(bad), null, bad);
  }
});

test('IPv6: RFC 4291 text in, RFC 5952 text out', () => {
  const cases: [string, string][] = [
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of equal runs
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['fd00:0001:0000::', 'fd00:1::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['::FFFF:c000:0201', '::ffff:192.0.2.1'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
  ];
  for (const [input, want] of cases) {
    const a = parseIPv6(input);
    assert.ok(a, input);
    assert.equal(formatIPv6(a), want, input);
  }
  for (const bad of [
    ':',
    ':::',
    '1:::2',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '12345::',
    'g::1',
    ':1::',
    '::1.2.3',
    '1:2:3:4:5:6:7:1.2.3.4',
    '1.2.3.4',
    'fe80::1%eth0',
  ]) {
    assert.equal(parseIPv6(bad), null, bad);
  }
});

test('CIDR: host bits are cleared as the kernel and wireguard-go store prefixes', () => {
  assert.equal(parseCidr('100.64.1.7/24')?.text, '100.64.1.0/24');
  assert.equal(parseCidr('10.1.2.3/0')?.text, '0.0.0.0/0');
  assert.equal(parseCidr('10.1.2.3/32')?.text, '10.1.2.3/32');
  assert.equal(parseCidr('10.255.255.255/9')?.text, '10.128.0.0/9');
  assert.equal(parseCidr('fd00:1::abcd/64')?.text, 'fd00:1::/64');
  assert.equal(parseCidr('fd00:1:ffff::/33')?.text, 'fd00:1:8000::/33');
  assert.equal(parseCidr('::/0')?.text, '::/0');
  const c = parseCidr('fd00::1/128');
  assert.equal(c?.family, 6);
  assert.equal(c?.bits, 128);
  assert.equal(c?.address.length, 16);
  for (const bad of [
    '10.0.0.0',
    '10.0.0.0/33',
    '::/129',
    '10.0.0.256/8',
    'fe80::1%eth0/64',
    '10.0.0.0/08',
    '10.0.0.0/-1',
    '10.0.0.0/ 8',
    '10.0.0.0/8/8',
    'example.com/32',
    '/8',
  ]) {
    assert.equal(parseCidr(bad), null, bad);
  }
});

test('endpoint: numeric IPv4:port or [IPv6]:port, no hostnames, port 1..65535', () => {
  assert.deepEqual(parseEndpoint('127.0.0.1:51820'), {
    family: 4,
    host: '127.0.0.1',
    port: 51820,
    text: '127.0.0.1:51820',
  });
  assert.equal(parseEndpoint('[2001:DB8::0:1]:1')?.text, '[2001:db8::1]:1');
  assert.equal(parseEndpoint('[fe80::1%eth0]:51820')?.host, 'fe80::1%eth0');
  assert.equal(parseEndpoint('[::ffff:1.2.3.4]:65535')?.text, '[::ffff:1.2.3.4]:65535');
  for (const bad of [
    'example.com:51820',
    'localhost:1',
    '::1:51820',
    '[::1]',
    '[::1]51820',
    '[::1]:',
    '1.2.3.4',
    '1.2.3.4:0',
    '1.2.3.4:65536',
    '1.2.3.4:-1',
    '01.2.3.4:5',
    '[::1%]:5',
    '[fe80::1%eth 0]:5',
    '[1.2.3.4]:5',
    '1.2.3.4:5\n',
    '',
  ]) {
    assert.equal(parseEndpoint(bad), null, JSON.stringify(bad));
  }
});

test('either family by its text; IPv4 as a 32-bit number and back', () => {
  assert.deepEqual(parseIp('198.18.0.1'), new Uint8Array([198, 18, 0, 1]));
  assert.equal(parseIp('fd00::1')?.length, 16);
  for (const bad of ['', 'fd00::1%eth0', '1.2.3', 'example.com', '::g'])
    assert.equal(parseIp(bad), null, bad);
  const table: [string, number][] = [
    ['0.0.0.0', 0],
    ['100.64.0.1', 0x64400001],
    ['255.255.255.255', 0xffffffff],
    ['128.0.0.0', 0x80000000],
  ];
  for (const [text, n] of table) {
    assert.equal(parseIPv4Number(text), n, text);
    assert.equal(formatIPv4Number(n), text);
  }
  for (const bad of ['01.0.0.1', '256.0.0.0', '1.2.3', '::1']) assert.equal(parseIPv4Number(bad), null, bad);
});
