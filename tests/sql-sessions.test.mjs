// @deno
// Causal sessions on a real cluster whose replicas are stale on purpose
// (recovery_min_apply_delay): read-your-writes and monotonic reads hold,
// and the test shows that plain reads really were stale.
import process from 'node:process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'
import { until } from './helpers/wait.mjs'

const cluster = await startCluster()
// A short session wait keeps 1000 pairs fast: a stale replica is given up quickly.
const sql = connect({ ...cluster.descriptor, monitorInterval: 200, sessionWait: 5 })
const replicas = cluster.descriptor.replicas.map((url) => postgres(url, { max: 1, onnotice: () => {} }))
const replicaPorts = cluster.ports.slice(1)

async function setApplyDelay(replica, delay) {
  await replica.unsafe(`alter system set recovery_min_apply_delay = '${delay}'`)
  await replica`select pg_reload_conf()`
}

const readYourWrites = suite('read-your-writes')

readYourWrites.before(async () => {
  for (const replica of replicas) await setApplyDelay(replica, '2s')
})

readYourWrites('plain reads right after a write are stale (the replicas lag 2 s)', async () => {
  let missed = 0
  for (let i = 0; i < 20; i++) {
    const [row] = await sql`insert into blogs (url) values (${`plain-${i}`}) returning id`
    const seen = await sql`select id from blogs where id = ${row.id}`
    if (seen.length === 0) missed++
  }
  assert.ok(missed >= 18, `plain reads missed ${missed} of 20 fresh writes`)
})

readYourWrites('a session sees each of 1000 writes in the read that follows it', async () => {
  const sessions = 10
  const pairsEach = 100
  let seen = 0
  await Promise.all(
    Array.from({ length: sessions }, async (_, s) => {
      const session = sql.session()
      for (let i = 0; i < pairsEach; i++) {
        const [row] = await session`insert into blogs (url) values (${`session-${s}-${i}`}) returning id`
        const rows = await session`select id from blogs where id = ${row.id}`
        assert.is(rows.length, 1, `session ${s} pair ${i} did not see its write`)
        seen++
      }
    }),
  )
  assert.is(seen, sessions * pairsEach)
})

readYourWrites('a caught-up session reads from replicas, not only the leader', async () => {
  for (const replica of replicas) await setApplyDelay(replica, '0')
  const session = sql.session()
  const [row] = await session`insert into blogs (url) values ('caught-up') returning id`
  await until(
    async () => (await Promise.all(replicas.map((r) => r`select 1 from blogs where id = ${row.id}`))).every((rows) => rows.length),
    5000,
    'replay',
  )
  const ports = []
  for (let i = 0; i < 6; i++) {
    const [read] = await session`select inet_server_port() as port from blogs where id = ${row.id}`
    ports.push(read.port)
  }
  assert.ok(ports.every((port) => replicaPorts.includes(port)), `reads served by ${ports}`)
})

readYourWrites.run()

// ---

const monotonic = suite('monotonic reads')

monotonic.after(async () => {
  await sql.end()
  await Promise.all(replicas.map((replica) => replica.end({ timeout: 1 })))
  await cluster.stop()
})

monotonic('a session never goes back in time, also when the replica it read from dies', async () => {
  const [fresh, stale] = replicas
  await setApplyDelay(stale, '1h')
  // The reload reaches the stale replica's startup process a moment later:
  // only once a fresh write stays off it is the replica really stale.
  await until(
    async () => {
      const [probe] = await sql.leader`insert into blogs (url) values ('delay probe') returning id`
      await until(async () => (await fresh`select 1 from blogs where id = ${probe.id}`).length === 1, 5000, 'the fresh replica')
      await new Promise((r) => setTimeout(r, 50))
      return (await stale`select 1 from blogs where id = ${probe.id}`).length === 0
    },
    5000,
    'the apply delay to hold back the stale replica',
  )
  const [row] = await sql.leader`insert into blogs (url) values ('monotonic') returning id`
  await until(async () => (await fresh`select 1 from blogs where id = ${row.id}`).length === 1, 5000, 'the fresh replica')

  // Read until the fresh replica has served the session once: from then on the row must stay visible.
  const session = sql.session()
  const observed = []
  for (let i = 0; i < 20 && !observed.some((o) => o.port === replicaPorts[0]); i++) {
    const [read] = await session`select inet_server_port() as port, count(*)::int as n from blogs where id = ${row.id}`
    observed.push(read)
  }
  assert.ok(observed.some((o) => o.port === replicaPorts[0] && o.n === 1), 'the fresh replica served the row')

  process.kill(cluster.pid('replica1'), 'SIGKILL')
  for (let i = 0; i < 20; i++) {
    const [read] = await session`select inet_server_port() as port, count(*)::int as n from blogs where id = ${row.id}`
    assert.is(read.n, 1, `read ${i} after the fresh replica died went back in time (served by ${read.port})`)
    assert.is.not(read.port, replicaPorts[1], 'the stale replica was not used')
  }
  const [plain] = await stale`select count(*)::int as n from blogs where id = ${row.id}`
  assert.is(plain.n, 0, 'the other replica really was stale')
})

monotonic.run()
