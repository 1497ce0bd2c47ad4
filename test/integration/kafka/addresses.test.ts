/** Port 0 advertises the bound port; `localhost` and IPv6 binds do not break clients. */
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { after, describe, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { isStranglerError } from '../../../common/errors.ts';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { RawClient, requestFrame } from './raw-client.ts';
import { startTestBroker, unique } from './support.ts';

const HAS_IPV6_LOOPBACK = Object.values(networkInterfaces()).flat().some((i) => i?.address === '::1');

/** Metadata v1 (no topics) over a raw socket: the advertised broker list. */
async function advertised(port: number, host: string): Promise<{ host: string; port: number; controller: number }> {
  const c = await RawClient.open(port, host);
  c.write(requestFrame(ApiKey.Metadata, 1, 9, new Writer().int32(0).toBuffer()));
  const [frame] = await c.waitFrames(1);
  c.close();
  const r = new Reader(frame!, 4);
  const [b] = r.array((x) => ({ node: x.int32(), host: x.string(), port: x.int32(), rack: x.nullableString() }));
  return { host: b!.host, port: b!.port, controller: r.int32() };
}

describe('listen and advertise', () => {
  const brokers: KafkaBroker[] = [];
  after(async () => { for (const b of brokers) await b.close(); });

  test('port 0: the advertised port is the bound one and this node is the controller', async () => {
    const broker = await startTestBroker();
    brokers.push(broker);
    assert.notEqual(broker.port, 0);
    assert.deepEqual(await advertised(broker.port, '127.0.0.1'), { host: '127.0.0.1', port: broker.port, controller: 0 });
  });

  test('a port already in use fails with PORT_IN_USE naming the port', async () => {
    const taken = await startTestBroker();
    brokers.push(taken);
    await assert.rejects(startTestBroker({ port: taken.port }), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.equal(err.code, 'PORT_IN_USE');
      assert.match(err.message, new RegExp(String(taken.port)));
      return true;
    });
  });

  test('host localhost: reachable on 127.0.0.1 and ::1, and kafkajs bootstrapping from localhost works', async () => {
    const broker = await startTestBroker({ host: 'localhost' });
    brokers.push(broker);
    assert.equal((await advertised(broker.port, '127.0.0.1')).port, broker.port);
    if (HAS_IPV6_LOOPBACK) assert.equal((await advertised(broker.port, '::1')).port, broker.port, 'localhost may resolve to ::1 first');
    const kafka = new Kafka({ brokers: [`localhost:${broker.port}`], logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const [res] = await producer.send({ topic: unique('localhost'), messages: [{ value: 'x' }] });
    await producer.disconnect();
    assert.equal(res!.errorCode, 0);
  });

  test('host ::1 advertises ::1; host :: (dual stack) advertises a dialable 127.0.0.1', { skip: HAS_IPV6_LOOPBACK ? false : 'this machine has no IPv6 loopback' }, async () => {
    const v6 = await startTestBroker({ host: '::1' });
    brokers.push(v6);
    assert.equal(v6.address, `[::1]:${v6.port}`);
    assert.deepEqual(await advertised(v6.port, '::1'), { host: '::1', port: v6.port, controller: 0 });
    const dual = await startTestBroker({ host: '::' });
    brokers.push(dual);
    assert.equal((await advertised(dual.port, '::1')).host, '127.0.0.1');
    const kafka = new Kafka({ brokers: [dual.address], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    const cluster = await admin.describeCluster();
    await admin.disconnect();
    assert.deepEqual(cluster.brokers.map((b) => b.port), [dual.port]);
  });
});
