// node-redis v5 follows a failover through a Sentinel (ours or redis-server --sentinel).
//
//   node failover.js <sentinel-port> <group> <master-pid> [deadline-ms]
//
// Discovers the group's master with createSentinel, writes through it, kills the master
// with SIGKILL itself, then writes with the same client until a write succeeds (each
// attempt bounded, so a client that hangs is seen). Prints:
//
//   before <host> <port>
//   ms <kill-to-write ms> tries <failed attempts> from <old port> to <new port>
//   after <host> <port>
//   value <what GET returns after the write>
//
// Exits 2 with a message when no write succeeds before the deadline (default 30 s).
'use strict';

const { createSentinel } = require('redis');

const [port, group, masterPid, deadlineArg] = process.argv.slice(2);
const DEADLINE_MS = Number(deadlineArg || 30000);
// One attempt may wait this long: node-redis queues a command while it rediscovers.
const ATTEMPT_MS = 2000;

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function fail(message) {
  console.log(`FAILED ${message}`);
  process.exit(2);
}

async function main() {
  const sentinel = createSentinel({
    name: group,
    sentinelRootNodes: [{ host: '127.0.0.1', port: Number(port) }],
  });
  // Connection errors to the dead master arrive as events; without a listener Node exits.
  const errors = [];
  sentinel.on('error', (e) => errors.push(String(e && e.message ? e.message : e)));
  await withTimeout(sentinel.connect(), 10000);
  const before = sentinel.getMasterNode();
  if (!before) fail('no master after connect');
  console.log(`before ${before.host} ${before.port}`);
  for (let i = 0; i < 20; i++) {
    await withTimeout(sentinel.set('k', `before ${i}`), 5000);
  }

  process.kill(Number(masterPid), 'SIGKILL');
  const killed = performance.now();
  let tries = 0;
  let last = 'none';
  for (;;) {
    const left = DEADLINE_MS - (performance.now() - killed);
    if (left <= 0) {
      fail(`no write within ${DEADLINE_MS} ms after the kill (${tries} failed attempts; ` +
        `last error: ${last}; master node: ${JSON.stringify(sentinel.getMasterNode())}; ` +
        `client errors: ${errors.length})`);
    }
    try {
      await withTimeout(sentinel.set('k', 'after'), Math.min(ATTEMPT_MS, left));
      break;
    } catch (e) {
      tries += 1;
      last = String(e && e.message ? e.message : e);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  const ms = performance.now() - killed;
  const after = sentinel.getMasterNode();
  console.log(`ms ${ms.toFixed(0)} tries ${tries} from ${before.port} to ${after.port}`);
  console.log(`after ${after.host} ${after.port}`);
  console.log(`value ${await withTimeout(sentinel.get('k'), 5000)}`);
  sentinel.destroy();
  process.exit(0);
}

main().catch((e) => fail(String(e && e.stack ? e.stack : e)));
