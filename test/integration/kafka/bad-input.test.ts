/**
 * Bad input never takes the broker down: absurd or oversized size prefixes, truncated and malformed frames,
 * unknown APIs close only the offending connection, with a log line; other clients carry on. The frame decoder
 * is fuzzed with random bodies for every advertised API/version and with bit-flipped valid requests.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { createLogger } from '../../../common/logger.ts';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { ADVERTISED, ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { RawClient, requestFrame } from './raw-client.ts';
import { startTestBroker, unique } from './support.ts';

describe('bad input', () => {
  let broker: KafkaBroker;
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { msg: string }); cb(); } });
  const logged = (msg: string): number => lines.filter((l) => l.msg === msg).length;

  before(async () => {
    broker = await startTestBroker({ maxFrameBytes: 64 * 1024, logger: createLogger({ level: 'warn', destination: sink }) });
  });
  after(async () => { await broker.close(); });

  async function expectClosed(data: Buffer | Buffer[], event: string): Promise<void> {
    const before = logged(event);
    const c = await RawClient.open(broker.port);
    for (const d of Array.isArray(data) ? data : [data]) c.write(d);
    await c.closed;
    assert.equal(c.frames.length, 0, 'no response on a bad frame');
    assert.equal(logged(event), before + 1, `logged "${event}"`);
  }

  async function kafkajsStillWorks(): Promise<void> {
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const [res] = await producer.send({ topic: unique('alive'), messages: [{ value: 'x' }] });
    await producer.disconnect();
    assert.equal(res!.errorCode, 0);
  }

  test('an HTTP request (≈1.2 GB size prefix), a negative size and a frame over maxFrameBytes close the connection', async () => {
    const bystander = await RawClient.open(broker.port);
    await expectClosed(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), KAFKA_LOG.badFrameSize);
    const negative = Buffer.alloc(8);
    negative.writeInt32BE(-5);
    await expectClosed(negative, KAFKA_LOG.badFrameSize);
    const big = Buffer.alloc(4);
    big.writeInt32BE(64 * 1024 + 1);
    await expectClosed(big, KAFKA_LOG.badFrameSize);
    // The bystander connection is unaffected and still answered.
    bystander.write(requestFrame(ApiKey.ApiVersions, 0, 77));
    const [frame] = await bystander.waitFrames(1);
    assert.equal(frame!.readInt32BE(0), 77);
    bystander.close();
    await kafkajsStillWorks();
  });

  test('truncated and malformed requests, unknown APIs and unadvertised versions close the connection', async () => {
    // Metadata v1 claiming 5 topics but carrying one.
    const body = new Writer().int32(5).string('only-one').toBuffer();
    await expectClosed(requestFrame(ApiKey.Metadata, 1, 1, body), KAFKA_LOG.badFrame);
    // A header cut short: size 8 holds api key, version and half a correlation id… and a client id length past the end.
    const short = Buffer.alloc(12);
    short.writeInt32BE(8);
    short.writeInt16BE(3, 4);
    await expectClosed(short, KAFKA_LOG.badFrame);
    await expectClosed(requestFrame(99, 0, 1), KAFKA_LOG.unsupportedApi);
    await expectClosed(requestFrame(ApiKey.Produce, 2, 1), KAFKA_LOG.unsupportedApi);
    await expectClosed(requestFrame(ApiKey.Fetch, 12, 1), KAFKA_LOG.unsupportedApi);
    await kafkajsStillWorks();
  });

  test('ApiVersions above v3 gets UNSUPPORTED_VERSION with a v0 body (KIP-511) and the connection stays usable', async () => {
    const c = await RawClient.open(broker.port);
    c.write(requestFrame(ApiKey.ApiVersions, 7, 5, Buffer.alloc(0), 'x', true));
    c.write(requestFrame(ApiKey.ApiVersions, 0, 6));
    const [a, b] = await c.waitFrames(2);
    assert.equal(a!.readInt32BE(0), 5);
    assert.equal(a!.readInt16BE(4), 35);
    assert.equal(a!.readInt32BE(6), ADVERTISED.size);
    assert.equal(b!.readInt32BE(0), 6);
    assert.equal(b!.readInt16BE(4), 0);
    c.close();
  });

  test('frames split across TCP chunks and several frames in one chunk are answered in order', async () => {
    const c = await RawClient.open(broker.port);
    const frames = Buffer.concat([1, 2, 3].map((id) => requestFrame(ApiKey.ApiVersions, 2, id)));
    for (let i = 0; i < frames.length; i += 7) {
      c.write(frames.subarray(i, i + 7));
      await new Promise((r) => setImmediate(r));
    }
    c.write(Buffer.concat([4, 5].map((id) => requestFrame(ApiKey.Metadata, 1, id, new Writer().int32(0).toBuffer()))));
    const got = await c.waitFrames(5);
    assert.deepEqual(got.map((f) => f.readInt32BE(0)), [1, 2, 3, 4, 5]);
    c.close();
  });

  test('fuzz: random bodies for every advertised API and version, and bit-flipped valid requests, never crash the broker', async () => {
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => rand(256)));
    const frames: Buffer[] = [];
    for (const [key, range] of ADVERTISED) {
      for (let v = range.min; v <= range.max; v++) {
        for (let i = 0; i < 12; i++) frames.push(requestFrame(key, v, i, randomBytes(rand(120)), i % 3 ? 'fuzz' : null, key === ApiKey.ApiVersions && v >= 3));
      }
    }
    const valid = [
      requestFrame(ApiKey.Metadata, 4, 1, new Writer().int32(1).string('fuzz-topic').bool(true).toBuffer()),
      requestFrame(ApiKey.OffsetFetch, 4, 1, new Writer().string('fuzz-group').int32(-1).toBuffer()),
      requestFrame(ApiKey.CreateTopics, 3, 1, new Writer().int32(1).string('fuzz-created').int32(2).int16(1).int32(0).int32(0).int32(1000).bool(false).toBuffer()),
    ];
    for (let i = 0; i < 400; i++) {
      const f = Buffer.from(valid[i % valid.length]!);
      const at = 4 + rand(f.length - 4);
      f[at] = f[at]! ^ (1 << rand(8));
      frames.push(f);
    }
    const handlerFailuresBefore = logged(KAFKA_LOG.handlerFailed);
    const badFramesBefore = logged(KAFKA_LOG.badFrame);
    // 32 connections at a time; each gets one frame and is dropped after an answer, a close or 30 ms of silence
    // (some valid-by-chance requests park: JoinGroup, Fetch).
    for (let i = 0; i < frames.length; i += 32) {
      await Promise.all(frames.slice(i, i + 32).map(async (frame) => {
        const c = await RawClient.open(broker.port);
        c.write(frame);
        await Promise.race([c.waitFrames(1), new Promise((r) => setTimeout(r, 30))]);
        c.close();
      }));
    }
    assert.ok(logged(KAFKA_LOG.badFrame) - badFramesBefore > frames.length / 2, 'most fuzzed frames were rejected as malformed (the decoder did run)');
    assert.equal(logged(KAFKA_LOG.handlerFailed), handlerFailuresBefore, 'every rejection was a classified protocol error, not a handler bug');
    await kafkajsStillWorks();
  });
});
