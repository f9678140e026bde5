// @deno
// @exclusive
// Health on a real cluster: lag is measured right (an idle leader is no
// lag), a stale replica is retired and restored, a killed replica costs
// 100 concurrent readers no errors, a promoted replica takes the writes, and
// statements that no node can serve fail without starving the timers.
import process from 'node:process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'
import { sleep, until } from './helpers/wait.mjs'

const cluster = await startCluster()
const sql = connect({ ...cluster.descriptor, monitorInterval: 100, maxLag: { ms: 500 } })
const events = []
for (const name of ['retire', 'restore', 'leader']) sql.on(name, (detail) => events.push({ event: name, ...detail }))
const replica2 = postgres(cluster.descriptor.replicas[1], { max: 1, onnotice: () => {} })

/** Writes every 20 ms until stopped, so lag has something to measure. */
function keepWriting() {
  let running = true
  const done = (async () => {
    while (running) {
      await sql`insert into blogs (url) values ('tick')`
      await sleep(20)
    }
  })()
  return async () => {
    running = false
    await done
  }
}

const lag = suite('lag and retirement')

lag('an idle cluster shows no lag, however long since the last write', async () => {
  await sql`insert into blogs (url) values ('before idle')`
  await sleep(1500)
  await sql.refresh()
  for (const node of sql.status()) {
    assert.is(node.lagBytes, 0, `${node.name} lag bytes`)
    assert.is(node.lagMs, 0, `${node.name} lag ms`)
    assert.is(node.state, 'healthy')
  }
})

lag('a replica 2 s behind is retired from reads, and restored once it catches up', async () => {
  const stopWriting = keepWriting()
  try {
    await replica2`alter system set recovery_min_apply_delay = '2s'`
    await replica2`select pg_reload_conf()`
    await until(() => sql.status()[2].state === 'retired', 5000, 'replica2 to be retired')
    const retired = events.find((e) => e.event === 'retire' && e.name === 'replica2')
    assert.ok(retired, 'a retire event was emitted')
    assert.is(retired.reason, 'lag')
    assert.ok(retired.lagMs > 500, `lag at retirement: ${retired.lagMs} ms`)

    const ports = []
    for (let i = 0; i < 10; i++) ports.push((await sql`select inet_server_port() as port`)[0].port)
    assert.not.ok(ports.includes(cluster.ports[2]), 'no read went to the retired replica')

    await replica2`alter system reset recovery_min_apply_delay`
    await replica2`select pg_reload_conf()`
    await until(() => sql.status()[2].state === 'healthy', 8000, 'replica2 to be restored')
    assert.ok(events.some((e) => e.event === 'restore' && e.name === 'replica2'), 'a restore event was emitted')
  } finally {
    await stopWriting()
  }
})

lag.run()

// ---

const faults = suite('faults')

faults.after(async () => {
  await sql.end()
  await replica2.end({ timeout: 1 })
  await cluster.stop()
})

faults('killing a replica under 100 concurrent readers surfaces zero errors', async () => {
  let reads = 0
  const errors = []
  let running = true
  const readers = Array.from({ length: 100 }, async () => {
    while (running) {
      try {
        await sql`select count(*) from posts`
        reads++
      } catch (error) {
        errors.push(error)
      }
    }
  })
  await sleep(500)
  const before = reads
  process.kill(cluster.pid('replica1'), 'SIGKILL')
  await sleep(1500)
  running = false
  await Promise.all(readers)
  assert.equal(errors.map((e) => `${e.code}: ${e.message}`), [], 'no reader saw an error')
  assert.ok(reads > before + 100, `reads went on after the kill (${before} before, ${reads} in all)`)
  assert.ok(['banned', 'down'].includes(sql.status()[1].state), `replica1 is ${sql.status()[1].state}`)
})

faults('when the leader dies, writes fail fast, reads go on, and a promoted replica takes the writes', async () => {
  cluster.kill('leader')
  let started = Date.now()
  await sql`insert into blogs (url) values ('lost')`.then(
    () => assert.unreachable('a write succeeded without a leader'),
    (error) => assert.instance(error, LeaderUnavailableError),
  )
  started = Date.now()
  await sql`insert into blogs (url) values ('lost')`.catch((error) => assert.instance(error, LeaderUnavailableError))
  assert.ok(Date.now() - started < 1000, `the second write failed within ${Date.now() - started} ms`)

  const [read] = await sql`select count(*)::int as n from blogs`
  assert.ok(read.n > 0, 'reads still work from the surviving replica')

  await replica2`select pg_promote()`
  await until(
    async () => {
      try {
        const [row] = await sql`insert into blogs (url) values ('after promotion') returning inet_server_port() as port`
        return row.port === cluster.ports[2]
      } catch (error) {
        if (!(error instanceof LeaderUnavailableError)) throw error
        return false
      }
    },
    10_000,
    'writes on the promoted replica',
  )
  assert.ok(events.some((e) => e.event === 'leader' && e.name === 'replica2'), 'a leader event was emitted')
  assert.is(sql.status().find((node) => node.role === 'leader').name, 'replica2')
})

faults('with every node out, a loop of failing statements still lets timers run', async () => {
  cluster.kill('replica2')
  await until(() => sql.status().every((node) => node.state !== 'healthy'), 5000, 'every node to be out')
  // Failing without I/O, a statement rejected at once would keep such a loop on microtasks alone:
  // no timer fires, so neither this one nor the monitor's that would notice a recovery.
  let fired = false
  const timer = setTimeout(() => (fired = true), 20)
  let failed = 0
  while (!fired && failed < 100_000) {
    try {
      await sql`select 1`
    } catch {
      failed++
    }
  }
  clearTimeout(timer)
  assert.ok(fired, `a 20 ms timer did not fire during ${failed} failed statements`)
})

faults.run()
