// @exclusive
// Replica faults under load, on a real cluster: a replica SIGKILLed, frozen
// with SIGSTOP, restarted, and a "replica" that accepts connections but
// never answers. Readers must never see an error, never get a read staler
// than maxLag, and never wait longer than the timeouts. Each case prints
// one `measured:` line; the README's "Consistency and failure" quotes them.
import { statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { readPage, writeBlog } from 'pgfollow/ops'
import { stopServer, up } from 'pgfollow/cluster'
import { startCluster } from './helpers/cluster.mjs'
import { describeErrors, hangingServer, loops, measured, ms, percentile } from './helpers/faults.mjs'
import { sleep, until, within } from './helpers/wait.mjs'

const cluster = await startCluster()
const replica1Port = cluster.ports[1]
const leader = postgres(cluster.descriptor.leader, { max: 2, onnotice: () => {} })
// Fast health for tests: a 200 ms monitor and a 1 s lag limit keep each case short.
const FAST = { monitorInterval: 200, maxLag: { ms: 1000 }, connectTimeout: 500, ban: { base: 100, max: 1000 } }

/** Some posts and comments, so readPage has pages to read. */
async function seed(blogs = 60) {
  for (let i = 0; i < blogs; i++) await writeBlog(leader)
}

/** Brings a stopped or killed node back with `up`, and waits until it streams. */
async function restore(name) {
  const started = performance.now()
  await up({ dir: cluster.dir })
  const [row] = await leader`select state from pg_stat_replication where application_name = ${name}`
  assert.is(row?.state, 'streaming', `${name} streams again after up`)
  return performance.now() - started
}

function stateOf(sql, name) {
  return sql.status().find((node) => node.name === name).state
}

// ---

const kill = suite('replica SIGKILL under load')

kill.before(() => seed())

kill('a replica SIGKILLed under 2 writers and 100 readers costs the readers no error', async () => {
  const sql = connect({ ...cluster.descriptor, ...FAST })
  try {
    await sql.refresh()
    const writers = loops(2, () => writeBlog(sql), { maxMs: 10_000 })
    const readers = loops(100, () => readPage(sql), { maxMs: 10_000 })
    await sleep(1000)
    const killedAt = Date.now()
    cluster.kill('replica1', 'SIGKILL')
    await sleep(2000)
    await Promise.all([readers.stop(), writers.stop()])

    const before = readers.samples.filter((s) => s.at < killedAt).map((s) => s.ms)
    const during = readers.samples.filter((s) => s.at >= killedAt).map((s) => s.ms)
    measured(
      `replica SIGKILL under 2 writers + 100 readers: ${readers.errors.length} reader errors / ${
        readers.samples.length + readers.errors.length
      } reads, ` +
        `${writers.errors.length} writer errors / ${writers.samples.length} writes; read p50/p99 before ${ms(percentile(before, 50))}/${
          ms(percentile(before, 99))
        }, ` +
        `during the 2 s after the kill ${ms(percentile(during, 50))}/${ms(percentile(during, 99))}, max ${ms(Math.max(...during))}`,
    )
    assert.equal(describeErrors(readers.errors), [], 'no reader saw an error')
    assert.equal(describeErrors(writers.errors), [], 'the writers (on the leader) saw no error')
    assert.ok(during.length > 200, `reads went on after the kill (${during.length})`)
    assert.ok(['banned', 'down'].includes(stateOf(sql, 'replica1')), `replica1 is ${stateOf(sql, 'replica1')}`)
  } finally {
    await sql.end({ timeout: 1 })
  }
  const seconds = await restore('replica1')
  measured(`replica1 back after SIGKILL (crash recovery, same data dir) and streaming in ${ms(seconds)}`)
})

kill.run()

// ---

const stop = suite('replica SIGSTOP')

stop.before(async () => {
  await leader`create table if not exists fault_clock (id int primary key, written_at float8 not null)`
  await leader`insert into fault_clock values (1, ${Date.now()}) on conflict (id) do nothing`
  for (const url of cluster.descriptor.replicas) {
    const replica = postgres(url, { max: 1, onnotice: () => {} })
    await until(async () => (await replica`select to_regclass('fault_clock') as t`)[0].t, 5000, 'fault_clock on the replicas')
    await replica.end({ timeout: 1 })
  }
})

stop('a replica stopped for 5 s is retired within two monitor intervals, serves nothing stale, and returns after SIGCONT', async () => {
  const monitorInterval = 200
  const maxLagMs = 1000
  const readTimeout = 300 // below maxLag: a read stuck on the frozen node is abandoned and retried
  const RETIRE_TOLERANCE = 150 // one check's own timeout is min(connectTimeout, monitorInterval): allow part of a third interval
  const STALENESS_TOLERANCE = 100 // event-loop delay between the read's answer and our Date.now()
  const sql = connect({ ...cluster.descriptor, ...FAST, monitorInterval, maxLag: { ms: maxLagMs }, readTimeout, ban: { base: 100, max: 500 } })
  const events = []
  for (const name of ['retire', 'restore']) {
    sql.on(name, (event) => event.name === 'replica1' && events.push({ event: name, at: Date.now(), reason: event.reason }))
  }
  let stoppedPid = null
  try {
    await sql.refresh()
    // The clock: the leader's row says when it was last written; a read's staleness is now - written_at.
    const writer = loops(1, () => sql`update fault_clock set written_at = ${Date.now()} where id = 1`, { maxMs: 15_000, pauseMs: 10 })
    const readers = loops(
      20,
      async () => {
        const [row] = await sql`select written_at, inet_server_port() as port from fault_clock where id = 1`
        return { port: row.port, staleness: Date.now() - row.written_at }
      },
      { maxMs: 15_000, pauseMs: 2 },
    )
    await sleep(500)
    stoppedPid = cluster.pid('replica1')
    const stoppedAt = Date.now()
    cluster.kill('replica1', 'SIGSTOP')
    await until(() => stateOf(sql, 'replica1') !== 'healthy', 3000, 'replica1 to leave the reads', 5)
    const retiredState = stateOf(sql, 'replica1')
    // Event times are exact; polling the status would add up to a poll step.
    const retiredAt = events.find((e) => e.event === 'retire' && e.at >= stoppedAt)?.at ?? Date.now()
    const retiredAfter = retiredAt - stoppedAt
    await sleep(Math.max(0, stoppedAt + 5000 - Date.now()))
    const continuedAt = Date.now()
    cluster.kill('replica1', 'SIGCONT')
    stoppedPid = null
    await until(() => stateOf(sql, 'replica1') === 'healthy', 8000, 'replica1 to be restored', 5)
    const restoredAt = events.findLast((e) => e.event === 'restore' && e.at >= continuedAt)?.at ?? Date.now()
    const restoredAfter = restoredAt - continuedAt
    // Keep reading until the restored replica has served some reads again.
    await until(() => readers.samples.filter((s) => s.at > restoredAt && s.value.port === replica1Port).length >= 20, 3000, 'reads on replica1 again')
    await Promise.all([readers.stop(), writer.stop()])

    const after = readers.samples.filter((s) => s.at >= stoppedAt)
    const frozen = after.filter((s) => s.at < continuedAt)
    const stalest = after.reduce((worst, s) => (s.value.staleness > worst.value.staleness ? s : worst), after[0])
    const servedByFrozen = readers.samples.filter((s) => s.value.port === replica1Port && s.at > retiredAt && s.at < restoredAt)
    measured(
      `replica SIGSTOP 5 s (monitorInterval ${monitorInterval} ms, maxLag ${maxLagMs} ms, readTimeout ${readTimeout} ms): ` +
        `${retiredState} after ${retiredAfter} ms, restored ${restoredAfter} ms after SIGCONT (events: ${
          events.map((e) => `${e.event}/${e.reason} +${e.at - stoppedAt}`).join(', ')
        }); ${readers.errors.length} errors / ${after.length} reads since SIGSTOP, ` +
        `stalest read ${ms(stalest.value.staleness)} (port ${stalest.value.port}); read p99 while frozen ${
          ms(percentile(frozen.map((s) => s.ms), 99))
        }, max ${ms(Math.max(...frozen.map((s) => s.ms)))}; ` +
        `${writer.samples.length} clock writes, ${writer.errors.length} errors`,
    )
    assert.equal(describeErrors(readers.errors), [], 'no reader saw an error')
    assert.equal(describeErrors(writer.errors), [], 'the clock writer saw no error')
    assert.ok(
      retiredAfter <= 2 * monitorInterval + RETIRE_TOLERANCE,
      `replica1 left the reads ${retiredAfter} ms after SIGSTOP (limit ${2 * monitorInterval} + ${RETIRE_TOLERANCE} ms)`,
    )
    assert.is(servedByFrozen.length, 0, 'no read was served by replica1 between its retirement and its restoration')
    const tooStale = after.filter((s) => s.value.staleness > maxLagMs + STALENESS_TOLERANCE)
    assert.equal(
      tooStale.slice(0, 5).map((s) => `port ${s.value.port}, ${Math.round(s.value.staleness)} ms stale, ${s.at - stoppedAt} ms after SIGSTOP`),
      [],
      `no read since SIGSTOP was staler than maxLag (${maxLagMs} + ${STALENESS_TOLERANCE} ms); ${tooStale.length} were`,
    )
  } finally {
    if (stoppedPid) cluster.kill('replica1', 'SIGCONT')
    await sql.end({ timeout: 1 })
  }
})

stop.run()

// ---

const restart = suite('replica restart')

restart('a restarted replica resumes streaming from its slot, with the same data dir (no re-clone)', async () => {
  const dataDir = cluster.dataDir('replica1')
  const marker = join(dataDir, 'pgfollow-fault-marker')
  writeFileSync(marker, 'written before the restart\n')
  const markerInode = statSync(marker).ino
  const dirInode = statSync(dataDir).ino
  const replica = () => postgres(cluster.descriptor.replicas[0], { max: 1, onnotice: () => {}, connect_timeout: 2 })
  let client = replica()
  const [{ system_identifier: systemBefore }] = await client`select system_identifier::text from pg_control_system()`
  await client.end({ timeout: 1 })

  const sql = connect({ ...cluster.descriptor, ...FAST })
  const readers = loops(10, () => sql`select count(*) from posts`, { maxMs: 20_000 })
  try {
    await sleep(300)
    const stoppedAt = performance.now()
    assert.ok(await stopServer(dataDir, 'fast'), 'replica1 was running and stopped')
    const [slotDown] = await leader`select active, restart_lsn::text from pg_replication_slots where slot_name = 'pgfollow_replica1'`
    assert.is(slotDown.active, false, 'the slot is inactive while replica1 is down')
    // Written while it is down: only the slot's retained WAL can bring these to replica1.
    const [{ id: missedId }] = await leader`insert into blogs (url) values ('written while replica1 was down') returning id`
    await leader`select pg_switch_wal()`
    const [{ lsn: leaderLsn }] = await leader`select pg_current_wal_lsn()::text as lsn`
    const [slotHeld] =
      await leader`select restart_lsn::text, (restart_lsn <= ${leaderLsn}::pg_lsn) as holds from pg_replication_slots where slot_name = 'pgfollow_replica1'`
    assert.ok(slotHeld.holds, `the slot kept WAL from ${slotHeld.restart_lsn} while the leader moved to ${leaderLsn}`)

    await up({ dir: cluster.dir })
    const downFor = performance.now() - stoppedAt
    const [streaming] = await leader`
      select r.state, s.active, s.active_pid = r.pid as same_pid
      from pg_stat_replication r join pg_replication_slots s on s.slot_name = 'pgfollow_replica1'
      where r.application_name = 'replica1'`
    assert.is(streaming?.state, 'streaming', 'replica1 streams again')
    assert.ok(streaming.active && streaming.same_pid, 'through its own slot: the slot is active and held by replica1’s walsender')

    client = replica()
    const [{ system_identifier: systemAfter }] = await client`select system_identifier::text from pg_control_system()`
    await until(
      async () => (await client`select count(*)::int as n from blogs where id = ${missedId}`)[0].n === 1,
      5000,
      'the row written while down to reach replica1',
    )
    await client.end({ timeout: 1 })
    assert.is(systemAfter, systemBefore, 'same system identifier')
    assert.is(statSync(dataDir).ino, dirInode, 'same data directory (inode)')
    assert.is(statSync(marker).ino, markerInode, 'the marker dropped in the data dir survived: no re-clone')

    await until(() => stateOf(sql, 'replica1') === 'healthy', 5000, 'the tag to use replica1 again')
    await readers.stop()
    measured(
      `replica fast stop + up: down ${ms(downFor)} until streaming again from slot pgfollow_replica1 (same data dir, same system id); ` +
        `${readers.errors.length} errors / ${readers.samples.length} reads meanwhile`,
    )
    assert.equal(describeErrors(readers.errors), [], 'readers saw no error during the restart')
  } finally {
    await readers.stop()
    await sql.end({ timeout: 1 })
  }
})

restart.run()

// ---

const hanging = suite('a replica that accepts connections and never answers')

let wedged
hanging.before(async () => {
  wedged = await hangingServer()
})

hanging.after(async () => {
  await wedged.close()
  await leader.end({ timeout: 1 })
  await cluster.stop()
})

/** Readers against [a real replica, the wedged one]; returns latencies and errors. */
async function readAgainstWedged(options, durationMs = 2500) {
  const sql = connect({ leader: cluster.descriptor.leader, replicas: [cluster.descriptor.replicas[1], wedged.url()], ...FAST, ...options })
  const readers = loops(20, () => sql`select inet_server_port() as port`, { maxMs: durationMs + 5000 })
  try {
    await sleep(durationMs)
    await readers.stop()
    // The wedged node never answers, so it never says a cluster_name: it is named host:port.
    return { readers, state: stateOf(sql, `127.0.0.1:${wedged.port}`), ports: new Set(readers.samples.map((s) => s.value[0].port)) }
  } finally {
    await readers.stop()
    await within(sql.end({ timeout: 1 }), 5000, 'sql.end() with a wedged replica')
  }
}

hanging('the connect timeout bounds every caller, and the node is banned', async () => {
  const connectTimeout = 500
  const TOLERANCE = 250
  const startedAt = Date.now()
  const { readers, state, ports } = await readAgainstWedged({ connectTimeout, readTimeout: 5000 })
  const latencies = readers.samples.map((s) => s.ms)
  const worst = Math.max(...latencies)
  measured(
    `wedged replica, connectTimeout ${connectTimeout} ms: ${readers.errors.length} errors / ${readers.samples.length} reads, ` +
      `max read latency ${ms(worst)}, p99 ${
        ms(percentile(latencies, 99))
      }; node ${state}; ${wedged.accepted} connections accepted by the wedged port`,
  )
  assert.equal(describeErrors(readers.errors), [], 'no reader saw an error')
  assert.ok(['banned', 'down'].includes(state), `the wedged node is ${state}`)
  assert.ok(wedged.accepted > 0, 'the tag did try the wedged node')
  assert.not.ok(ports.has(wedged.port))
  // KNOWN LIB BUG (kept failing on purpose): connect_timeout is per connection
  // attempt in postgres.js, not per caller. Reads routed to the wedged node
  // while all its pool's connections are still connecting queue in that pool;
  // when those attempts time out, new attempts start for the queued reads, so
  // they wait about 2 x connectTimeout before the router retries them elsewhere.
  const late = readers.samples.filter((s) => s.ms > connectTimeout + TOLERANCE)
  assert.ok(
    worst <= connectTimeout + TOLERANCE,
    `slowest read ${ms(worst)} (limit ${connectTimeout} + ${TOLERANCE} ms); ${late.length} reads over the limit, ` +
      `the first started ${
        late[0] ? late[0].at - startedAt : '?'
      } ms after connect(): reads queued behind the wedged node's connecting pool wait for a second connect attempt (lib/router.ts, see the fault-suite report)`,
  )
})

hanging('the read timeout bounds every caller when it is the shorter one', async () => {
  const readTimeout = 300
  const TOLERANCE = 250
  const { readers, state } = await readAgainstWedged({ connectTimeout: 5000, readTimeout })
  const latencies = readers.samples.map((s) => s.ms)
  const worst = Math.max(...latencies)
  measured(
    `wedged replica, readTimeout ${readTimeout} ms (connectTimeout 5000 ms): ${readers.errors.length} errors / ${readers.samples.length} reads, ` +
      `max read latency ${ms(worst)}, p99 ${ms(percentile(latencies, 99))}; node ${state}`,
  )
  assert.equal(describeErrors(readers.errors), [], 'no reader saw an error')
  assert.ok(worst <= readTimeout + TOLERANCE, `slowest read ${ms(worst)} (limit ${readTimeout} + ${TOLERANCE} ms)`)
  assert.ok(['banned', 'down'].includes(state), `the wedged node is ${state}`)
})

hanging.run()
