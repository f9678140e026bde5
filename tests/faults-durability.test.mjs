// Acknowledged writes across a leader crash and a promotion, on real
// clusters: 1000 writes from several writers, the leader SIGKILLed midway,
// failover, the rest of the writes on the new leader; then every write the
// caller saw acknowledged is looked up on the new leader.
// Synchronous mode (ANY 1 over the replicas) must lose none. Asynchronous
// mode is measured and reported, not asserted: loss there is possible by
// design, and on loopback it is usually zero. One cluster at a time: the
// synchronous one, then the asynchronous one.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { failover } from 'pgfollow/cluster'
import { startCluster } from './helpers/cluster.mjs'
import { measured, ms, until } from './helpers/faults.mjs'

const WRITES = 1000
const WRITERS = 4
const KILL_AFTER = WRITES / 2

/**
 * Writes ids 1..WRITES through the tag, WRITERS at a time. After KILL_AFTER
 * acknowledgements the leader is SIGKILLed; writers that fail wait for the
 * failover and go on with the next ids. Returns what was acknowledged.
 */
async function writeThroughCrash(cluster, sql) {
  let next = 1
  const acknowledged = []
  const inDoubt = [] // in flight when the leader died: may or may not have committed
  const refused = [] // refused before being sent (no leader)
  let killed = false
  let killedAt = 0
  let resume
  const failedOver = new Promise((resolve) => (resume = resolve))

  const writer = async () => {
    while (next <= WRITES) {
      const id = next++
      try {
        await sql`insert into acks (id) values (${id})`
        acknowledged.push(id)
        if (!killed && acknowledged.length >= KILL_AFTER) {
          killed = true
          killedAt = Date.now()
          cluster.kill('leader', 'SIGKILL')
        }
      } catch (error) {
        if (/may or may not/.test(error.message)) inDoubt.push(id)
        else refused.push(id)
        await failedOver
      }
    }
  }
  const writers = Array.from({ length: WRITERS }, writer)
  await until(() => killed, 30_000, `${KILL_AFTER} acknowledged writes`, 5)
  // Let every writer meet the dead leader, then promote.
  await until(() => inDoubt.length + refused.length >= 1, 5000, 'a writer to see the leader gone', 5)
  const promotion = await failover({ dir: cluster.dir })
  await until(() => sql.status().find((node) => node.role === 'leader').name === promotion.promoted, 5000, 'the tag to follow the new leader')
  const failoverMs = Date.now() - killedAt
  resume()
  await Promise.all(writers)
  return { acknowledged, inDoubt, refused, promotion, failoverMs }
}

/** Runs the whole story on a fresh cluster; returns what the new leader holds. */
async function crashAndCount(synchronous) {
  const cluster = await startCluster({ synchronous, migrate: false })
  const sql = connect({ ...cluster.descriptor, monitorInterval: 100, connectTimeout: 500, ban: { base: 100, max: 500 } })
  try {
    const admin = postgres(cluster.descriptor.leader, { max: 1, onnotice: () => {} })
    const [{ names }] = await admin`select current_setting('synchronous_standby_names') as names`
    await admin`create table acks (id int primary key, at timestamptz not null default clock_timestamp())`
    await admin.end({ timeout: 1 })

    const started = performance.now()
    const run = await writeThroughCrash(cluster, sql)
    const seconds = (performance.now() - started) / 1000

    const newLeader = postgres(JSON.parse(readFileSync(join(cluster.dir, 'cluster.json'), 'utf8')).leader, { max: 1, onnotice: () => {} })
    const rows = await newLeader`select id from acks`
    await newLeader.end({ timeout: 1 })
    const present = new Set(rows.map((row) => row.id))
    const lost = run.acknowledged.filter((id) => !present.has(id))
    const doubtKept = run.inDoubt.filter((id) => present.has(id))
    const refusedPresent = run.refused.filter((id) => present.has(id))
    return { ...run, names, present, lost, doubtKept, refusedPresent, seconds }
  } finally {
    await sql.end({ timeout: 1 })
    await cluster.stop()
  }
}

function report(mode, result) {
  measured(
    `${mode}: ${result.acknowledged.length}/${WRITES} writes acknowledged (${WRITERS} writers, leader SIGKILLed after ${KILL_AFTER}), ` +
      `${result.lost.length} acknowledged writes missing on the new leader ${result.promotion.promoted}; ` +
      `${result.inDoubt.length} in flight at the crash (${result.doubtKept.length} of them committed), ${result.refused.length} refused with no leader; ` +
      `crash to writes back ${ms(result.failoverMs)}, whole run ${result.seconds.toFixed(1)} s`,
  )
}

const durability = suite('acknowledged writes across a leader crash')

durability('synchronous (ANY 1): every acknowledged write is on the promoted leader', async () => {
  const result = await crashAndCount('any')
  report(`synchronous ${result.names}`, result)
  assert.is(result.names, 'ANY 1 ("replica1", "replica2")', 'the leader waits for one of the replicas')
  assert.ok(result.acknowledged.length >= KILL_AFTER, 'writes were acknowledged before and after the crash')
  assert.ok(result.acknowledged.some((id) => id > KILL_AFTER + WRITERS), 'and after the failover')
  assert.equal(result.lost, [], 'no acknowledged write was lost')
  assert.equal(result.refusedPresent, [], 'a write refused before it was sent did not happen')
})

durability('asynchronous: acknowledged writes lost in a crash are measured and reported', async () => {
  const result = await crashAndCount('off')
  report('asynchronous', result)
  assert.is(result.names, '', 'no synchronous standbys')
  assert.ok(result.acknowledged.length >= KILL_AFTER, 'writes were acknowledged before and after the crash')
  assert.equal(result.refusedPresent, [], 'a write refused before it was sent did not happen')
  // Not asserted: result.lost.length — the trade-off asynchronous replication makes.
})

durability.run()
