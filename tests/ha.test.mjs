// @exclusive
// @needs /usr/bin/patroni apt-get install patroni
// @needs etcd apt-get install etcd-server
// @needs /usr/lib/postgresql/15/bin/pg_rewind apt-get install postgresql-15
// The leader of a Patroni-managed cluster (`cluster.mjs up --ha`) goes down
// under 2 writers and 100 readers through the sql tag, which follows
// Patroni's view: reads see no error, writes fail fast with
// LeaderUnavailableError until the new leader takes them, no acknowledged
// write is lost with synchronous_mode, the old leader rejoins by itself and
// serves reads again; then a planned switchover. Beside the tag, a raw
// postgres.js client asking for the primary (target_session_attrs) writes in
// a loop: Patroni's floor, measured in the same run. One cluster for the file.
// Needs Debian's patroni, etcd-server and postgresql-15 (`.ci/run` installs
// them); without them it prints one `SKIPPED` line and registers no failure
// (on CI, where they must be there, the runner fails it instead).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { lagSnapshot } from 'pgfollow/ops'
import postgres from 'postgres'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import process from 'node:process'
import { promisify } from 'node:util'
import { haUnavailable, startHaCluster } from './helpers/cluster.mjs'
import { describeErrors, measured } from './helpers/faults.mjs'
import { sleep, until } from './helpers/wait.mjs'

const missing = haUnavailable()
const ha = suite('Patroni HA')

const connectTimeout = 2_000
let cluster
let sql

ha.before(async () => {
  if (missing) return
  cluster = await startHaCluster()
  measured(`HA bring-up (etcd + 3 Patroni nodes, initdb, 2 base backups): ${cluster.seconds.toFixed(1)} s`)
  sql = connect({ ...cluster.descriptor, connectTimeout })
})

ha.after(async () => {
  await sql?.end({ timeout: 1 })
  await cluster?.stop()
})

/** Patroni's /cluster members from the first endpoint that answers, or null. */
async function members() {
  for (const endpoint of cluster.patroni) {
    try {
      const response = await fetch(`${endpoint}/cluster`, { signal: AbortSignal.timeout(300) })
      return (await response.json()).members
    } catch {
      // the next one
    }
  }
  return null
}

const leaderOf = (list) => list?.find((member) => member.role === 'leader' && member.state === 'running')

/**
 * Polls /cluster every 20 ms: when Patroni first names a leader other than
 * `previous`, and when `previous` runs again as a replica on the leader's timeline.
 */
function watchPatroni(previous) {
  const seen = { namedAt: 0, leader: null, rejoinedAt: 0 }
  let running = true
  const done = (async () => {
    while (running) {
      const list = await members()
      const leader = leaderOf(list)
      if (leader && leader.name !== previous && !seen.namedAt) Object.assign(seen, { namedAt: Date.now(), leader })
      const old = list?.find((member) => member.name === previous)
      if (seen.namedAt && !seen.rejoinedAt && old?.state === 'running' && old.role !== 'leader' && old.timeline === leader?.timeline) {
        seen.rejoinedAt = Date.now()
      }
      await sleep(20)
    }
  })()
  return Object.assign(seen, { stop: () => ((running = false), done) })
}

/**
 * A raw postgres.js client that writes in a loop on whichever node is the
 * primary, as an application without pgfollow would: one connection string
 * listing every node. It asks for `primary`: postgres.js 3.4.9's
 * `read-write` takes a hot standby on PostgreSQL 14+ (it trusts the
 * default_transaction_read_only the server reports, off on a replica), and
 * `primary` is what libpq's `read-write` checks there. After an error (or a
 * write that hangs, as a multi-host postgres.js client can while it cycles
 * through hosts) it starts over with a new client.
 */
function startRawWriter() {
  const urls = [cluster.descriptor.leader, ...cluster.descriptor.replicas].map((url) => new URL(url))
  const options = {
    host: urls.map((url) => url.hostname),
    port: urls.map((url) => Number(url.port)),
    user: decodeURIComponent(urls[0].username),
    password: decodeURIComponent(urls[0].password),
    database: urls[0].pathname.slice(1),
    target_session_attrs: 'primary',
    max: 1,
    connect_timeout: connectTimeout / 1000,
    onnotice: () => {},
  }
  const raw = { acked: [], errors: 0 }
  let client = postgres(options)
  let running = true
  const loop = (async () => {
    while (running) {
      const id = nextId++
      let timer
      const hung = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('hung')), connectTimeout + 1_000)))
      try {
        const write = client`insert into ha_writes (id) values (${id}) returning inet_server_port() as port`
        write.catch(() => {}) // given up on after `hung`, it may still fail when the client is ended
        const [row] = await Promise.race([write, hung])
        raw.acked.push({ id, port: row.port, at: Date.now() })
      } catch {
        raw.errors++
        void client.end({ timeout: 0 })
        client = postgres(options)
        await sleep(10)
      } finally {
        clearTimeout(timer)
      }
    }
  })()
  raw.stop = async () => {
    running = false
    await loop
    await client.end({ timeout: 1 })
  }
  return raw
}

/** The longest gap between acknowledged writes from `since` on. */
function writeWindow(acked, since) {
  const times = acked.map((write) => write.at).filter((at) => at >= since).sort((a, b) => a - b)
  let window = 0
  for (let i = 1; i < times.length; i++) window = Math.max(window, times[i] - times[i - 1])
  return window
}

let nextId = 1
/** 2 writers (each acknowledged id and the port that acknowledged it kept) and 100 readers. */
function startLoad() {
  const load = { acked: [], writeErrors: [], reads: 0, readErrors: [], maxWriteMs: 0 }
  let running = true
  const writers = Array.from({ length: 2 }, async () => {
    while (running) {
      const id = nextId++
      const started = Date.now()
      try {
        const [row] = await sql`insert into ha_writes (id) values (${id}) returning inet_server_port() as port`
        load.acked.push({ id, port: row.port, at: Date.now() })
      } catch (error) {
        load.writeErrors.push({ error, at: Date.now() })
        await sleep(10)
      }
      load.maxWriteMs = Math.max(load.maxWriteMs, Date.now() - started)
    }
  })
  const readers = Array.from({ length: 100 }, async () => {
    while (running) {
      try {
        await sql`select id from ha_writes order by id desc limit 1`
        load.reads++
      } catch (error) {
        load.readErrors.push({ error, at: Date.now() })
        await sleep(10)
      }
    }
  })
  load.stop = async () => {
    running = false
    await Promise.all([...writers, ...readers])
  }
  return load
}

/** Acknowledged ids the current leader does not have. */
async function lostWrites(load) {
  const rows = await sql.leader`select id from ha_writes`
  const present = new Set(rows.map((row) => Number(row.id)))
  return load.acked.filter((write) => !present.has(write.id))
}

const statusOf = (port) => sql.status().find((node) => new URL(node.url).port === String(port))

/** SIGKILL of the leader's postmaster and backends under load; returns the figures. */
async function leaderDies(mode) {
  const before = leaderOf(await members())
  assert.ok(before, 'Patroni names a leader before the kill')
  const load = startLoad()
  const raw = startRawWriter()
  let electedAt = 0
  const elected = () => (electedAt ||= Date.now())
  sql.on('leader', elected)
  await sleep(1_500)
  const watcher = watchPatroni(before.name)
  const killedAt = Date.now()
  cluster.kill(before.name)
  const firstOn = (acked) => acked.find((write) => write.at > killedAt && write.port === watcher.leader.port)
  const [firstOnNew, rawFirst] = await until(
    () => watcher.namedAt && firstOn(load.acked) && firstOn(raw.acked) && [firstOn(load.acked), firstOn(raw.acked)],
    30_000,
    'the first write on the new leader, by the tag and by the raw client',
  )
  await raw.stop()
  sql.off('leader', elected)
  await until(() => watcher.rejoinedAt, 60_000, `${before.name} to rejoin as a replica`, 50)
  // Back in the reads: healthy in the tag's view and serving.
  await until(() => statusOf(before.port)?.state === 'healthy', 15_000, `${before.name} back in the reads`, 50)
  const served = statusOf(before.port).served
  await until(() => statusOf(before.port).served > served + 50, 10_000, `${before.name} serving reads`, 50)
  await load.stop()
  await watcher.stop()
  const lost = await lostWrites(load)
  const figures = {
    mode,
    reads: load.reads,
    readErrors: load.readErrors.length,
    failedWrites: load.writeErrors.length,
    patroniNamedMs: watcher.namedAt - killedAt,
    tagElectedMs: electedAt - killedAt,
    firstWriteMs: firstOnNew.at - killedAt,
    rawFirstWriteMs: rawFirst.at - killedAt,
    afterPatroniMs: firstOnNew.at - watcher.namedAt,
    rawAfterPatroniMs: rawFirst.at - watcher.namedAt,
    maxWriteMs: load.maxWriteMs,
    lostWrites: lost.length,
    rejoinMs: watcher.rejoinedAt - killedAt,
  }
  measured(`HA leader SIGKILL (${mode}): ${JSON.stringify(figures)}`)
  assert.equal(load.readErrors.length, 0, `read errors: ${describeErrors(load.readErrors)}`)
  const other = load.writeErrors.filter(({ error }) => !(error instanceof LeaderUnavailableError))
  assert.equal(other.length, 0, `writes failed with something else than LeaderUnavailableError: ${describeErrors(other)}`)
  assert.ok(load.maxWriteMs < connectTimeout + 1_000, `a write took ${load.maxWriteMs} ms (connectTimeout ${connectTimeout})`)
  // Goal 0.3 s after Patroni names the leader, no later than the raw client; the bounds are generous for a loaded 2-core machine.
  assert.ok(figures.afterPatroniMs < 1_500, `first write ${figures.afterPatroniMs} ms after Patroni named the leader`)
  assert.ok(
    figures.firstWriteMs <= figures.rawFirstWriteMs + 500,
    `first write ${figures.firstWriteMs} ms after the kill, the raw client's ${figures.rawFirstWriteMs} ms`,
  )
  return figures
}

if (missing) {
  ha('skipped without the Debian packages', () => {
    assert.is(process.env.CI === 'true', false, `on CI the HA packages must be installed: ${missing}`)
    console.log(`  SKIPPED tests/ha.test.mjs: ${missing}; then node tests/run.mjs ha.test`)
  })
} else {
  ha('asynchronous: the leader dies, reads go on, writes move to the leader Patroni promotes, the old one rejoins', async () => {
    await sql`create table if not exists ha_writes (id bigint primary key, at timestamptz not null default now())`
    await sql.refresh()
    // Patroni gives every node its scope as cluster_name: lagcheck and the tag name them by member name.
    const names = (list) => list.map((node) => node.name).sort()
    const lag = await lagSnapshot(cluster.descriptor)
    assert.equal(names([lag.leader, ...lag.replicas]), ['node1', 'node2', 'node3'])
    assert.equal(names(sql.status()), ['node1', 'node2', 'node3'])
    await leaderDies('async')
  })

  ha('synchronous_mode: the leader dies and no acknowledged write is lost', async () => {
    const endpoint = cluster.patroni[0]
    const response = await fetch(`${endpoint}/config`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ synchronous_mode: true }),
    })
    assert.ok(response.ok, `PATCH /config: HTTP ${response.status}`)
    await until(async () => (await members())?.some((member) => member.role === 'sync_standby'), 20_000, 'a sync_standby', 100)
    const figures = await leaderDies('synchronous_mode')
    assert.equal(figures.lostWrites, 0, 'acknowledged writes lost with synchronous_mode')
  })

  ha('a planned switchover: no read error, writes pause briefly', async () => {
    const load = startLoad()
    const raw = startRawWriter()
    await sleep(1_000)
    const started = Date.now()
    // failover.mjs on an HA cluster asks Patroni for a switchover instead of doing its own steps.
    const script = new URL('../scripts/failover.mjs', import.meta.url).pathname
    const { stdout } = await promisify(execFile)(process.execPath, [script, '--cluster', join(cluster.dir, 'cluster.json'), '--json'])
    const result = JSON.parse(stdout)
    assert.is(result.kind, 'switchover')
    const promotedPort = cluster.ports[Number(result.promoted.slice(4)) - 1]
    const onNew = (acked) => acked.some((write) => write.at > started && write.port === promotedPort)
    await until(() => onNew(load.acked) && onNew(raw.acked), 10_000, 'writes on the new leader, by the tag and by the raw client')
    await sleep(500)
    await Promise.all([load.stop(), raw.stop()])
    // The old leader comes back as a replica by itself (and is not stopped halfway through its restart by the teardown).
    const rejoined = async () => {
      const old = (await members())?.find((member) => member.name === result.previous)
      return old?.state === 'running' && old.role !== 'leader'
    }
    await until(rejoined, 30_000, `${result.previous} to rejoin as a replica`, 100)
    // The write window: the longest gap between acknowledged writes around the switchover.
    const window = writeWindow(load.acked, started - 1_000)
    const rawWindow = writeWindow(raw.acked, started - 1_000)
    const lost = await lostWrites(load)
    measured(
      `HA switchover ${result.previous} -> ${result.promoted}: ${
        JSON.stringify({
          reads: load.reads,
          readErrors: load.readErrors.length,
          failedWrites: load.writeErrors.length,
          writeWindowMs: window,
          rawWriteWindowMs: rawWindow,
          switchoverMs: Math.round(result.seconds * 1000),
          lostWrites: lost.length,
        })
      }`,
    )
    assert.equal(load.readErrors.length, 0, `read errors: ${describeErrors(load.readErrors)}`)
    assert.equal(lost.length, 0, 'a switchover loses no acknowledged write')
    assert.ok(window < 5_000, `writes paused ${window} ms`)
    // No longer than the raw client's; the margin is for a loaded 2-core machine.
    assert.ok(window <= rawWindow + 500, `writes paused ${window} ms, the raw client's ${rawWindow} ms`)
    // The descriptor names the new leader.
    const descriptor = JSON.parse(readFileSync(join(cluster.dir, 'cluster.json'), 'utf8'))
    assert.is(new URL(descriptor.leader).port, String(promotedPort))
  })
}

ha.run()
