// @exclusive
// Acknowledged writes across a leader crash and a promotion, on real
// clusters: 1000 writes from several writers, the leader SIGKILLed midway,
// failover, the rest of the writes on the new leader; then every write the
// caller saw acknowledged is looked up on the new leader.
// Synchronous mode (ANY 1 over the replicas) must lose none. Asynchronous
// mode is measured and reported, not asserted: loss there is possible by
// design, and on loopback it is usually zero. Each mode runs twice on its
// own cluster: a plain crash, then (after `up` re-cloned the fenced old
// leader as a replica) a crash while the replicas lag - the leader's
// walsenders paused for the last 100 writes or 300 ms before the crash -
// which is the case asynchronous replication trades away.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import process from 'node:process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { failover, up } from 'pgfollow/cluster'
import { startCluster } from './helpers/cluster.mjs'
import { measured, ms } from './helpers/faults.mjs'
import { until } from './helpers/wait.mjs'

const WRITES = 1000
const WRITERS = 4
const KILL_AFTER = WRITES / 2
const LAG_MS = 300
const LAG_WRITES = 100

const descriptorOf = (cluster) => JSON.parse(readFileSync(join(cluster.dir, 'cluster.json'), 'utf8'))
const leaderName = (cluster) => cluster.state().nodes.find((node) => node.role === 'leader').name
const portOf = (url) => Number(new URL(url).port)

/** The leader's walsender processes: pausing them holds its WAL back from every replica. */
function walSenders(cluster) {
  return execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(cluster.pid(leaderName(cluster)))])
    .toString()
    .split('\n')
    .filter((line) => /walsender/.test(line))
    .map((line) => Number(line.trim().split(/\s+/)[0]))
}

/**
 * Writes ids 1..WRITES into `table` through the tag, WRITERS at a time.
 * Midway (or, with `lagging`, LAG_WRITES acknowledgements or LAG_MS after
 * the walsenders were paused) the leader is SIGKILLed; writers that fail
 * wait for the failover and go on with the next ids.
 */
async function writeThroughCrash(cluster, sql, table, lagging) {
  let next = 1
  const acknowledged = []
  const inDoubt = [] // in flight when the leader died: may or may not have committed
  const refused = [] // refused before being sent (no leader)
  let resume
  const failedOver = new Promise((resolve) => (resume = resolve))

  const writer = async () => {
    while (next <= WRITES) {
      const id = next++
      try {
        await sql`insert into ${sql(table)} (id) values (${id})`
        acknowledged.push(id)
      } catch (error) {
        if (/may or may not/.test(error.message)) inDoubt.push(id)
        else refused.push(id)
        await failedOver
      }
    }
  }
  const writers = Array.from({ length: WRITERS }, writer)

  let ackedAtPause = 0
  if (lagging) {
    await until(() => acknowledged.length >= KILL_AFTER - LAG_WRITES, 30_000, 'writes before the lag', 1)
    const senders = walSenders(cluster)
    assert.is(senders.length, 2, 'one walsender per replica')
    for (const pid of senders) process.kill(pid, 'SIGSTOP')
    ackedAtPause = acknowledged.length
    const pausedAt = Date.now()
    await until(() => acknowledged.length >= KILL_AFTER || Date.now() - pausedAt >= LAG_MS, LAG_MS + 5000, 'the lag window', 1)
  } else {
    await until(() => acknowledged.length >= KILL_AFTER, 30_000, `${KILL_AFTER} acknowledged writes`, 1)
  }
  const ackedAtCrash = acknowledged.length
  cluster.kill(leaderName(cluster), 'SIGKILL') // paused walsenders die with it: what they held never leaves
  const killedAt = Date.now()

  // Let a writer meet the dead leader, then promote.
  await until(() => inDoubt.length + refused.length >= 1, 5000, 'a writer to see the leader gone', 5)
  const promotion = await failover({ dir: cluster.dir })
  const promotedPort = cluster.state().nodes.find((node) => node.name === promotion.promoted).port
  await until(() => portOf(sql.status().find((node) => node.role === 'leader').url) === promotedPort, 5000, 'the tag to follow the new leader')
  const failoverMs = Date.now() - killedAt
  resume()
  await Promise.all(writers)
  return { acknowledged, inDoubt, refused, promotion, failoverMs, ackedAtCrash, ackedWhileLagging: lagging ? ackedAtCrash - ackedAtPause : 0 }
}

/** One crash on the cluster as it stands; returns what the new leader holds. */
async function crashAndCount(cluster, { table, lagging = false }) {
  const descriptor = descriptorOf(cluster)
  const sql = connect({ ...descriptor, monitorInterval: 100, connectTimeout: 500, ban: { base: 100, max: 500 } })
  try {
    const admin = postgres(descriptor.leader, { max: 1, onnotice: () => {} })
    const [{ names }] = await admin`select current_setting('synchronous_standby_names') as names`
    await admin`create table ${admin(table)} (id int primary key, at timestamptz not null default clock_timestamp())`
    await admin.end({ timeout: 1 })

    const started = performance.now()
    const run = await writeThroughCrash(cluster, sql, table, lagging)
    const seconds = (performance.now() - started) / 1000

    const newLeader = postgres(descriptorOf(cluster).leader, { max: 1, onnotice: () => {} })
    const rows = await newLeader`select id from ${newLeader(table)}`
    await newLeader.end({ timeout: 1 })
    const present = new Set(rows.map((row) => row.id))
    const lost = run.acknowledged.filter((id) => !present.has(id))
    const doubtKept = run.inDoubt.filter((id) => present.has(id))
    const refusedPresent = run.refused.filter((id) => present.has(id))
    return { ...run, names, present, lost, doubtKept, refusedPresent, seconds }
  } finally {
    await sql.end({ timeout: 1 })
  }
}

function report(mode, result) {
  measured(
    `${mode}: ${result.acknowledged.length}/${WRITES} writes acknowledged (${WRITERS} writers, leader SIGKILLed after ${result.ackedAtCrash}), ` +
      `${result.lost.length} acknowledged writes missing on the promoted node (${result.promotion.promoted}); ` +
      (result.ackedWhileLagging ? `${result.ackedWhileLagging} acknowledged while the replicas lagged; ` : '') +
      `${result.inDoubt.length} in flight at the crash (${result.doubtKept.length} of them committed), ${result.refused.length} refused with no leader; ` +
      `crash to writes back ${ms(result.failoverMs)}, whole run ${result.seconds.toFixed(1)} s`,
  )
}

/** Brings the fenced old leader back as a replica (re-cloned), so the next crash has two replicas again. */
async function rejoin(cluster) {
  const started = performance.now()
  const result = await up({ dir: cluster.dir, migrate: false })
  assert.is(result.action, 'started', 'up rejoined the fenced node')
  return performance.now() - started
}

// ---

let syncCluster
const synchronous = suite('synchronous (ANY 1): acknowledged writes across a leader crash')

synchronous.before(async () => {
  syncCluster = await startCluster({ synchronous: 'any', migrate: false })
})

synchronous.after(async () => {
  await syncCluster.stop()
})

synchronous('every acknowledged write is on the promoted leader', async () => {
  const result = await crashAndCount(syncCluster, { table: 'acks_crash' })
  report(`synchronous ${result.names}`, result)
  assert.is(result.names, 'ANY 1 ("replica1", "replica2")', 'the leader waits for one of the replicas')
  assert.ok(result.acknowledged.length >= KILL_AFTER, 'writes were acknowledged before and after the crash')
  assert.ok(result.acknowledged.some((id) => id > KILL_AFTER + WRITERS), 'and after the failover')
  assert.equal(result.lost, [], 'no acknowledged write was lost')
  assert.equal(result.refusedPresent, [], 'a write refused before it was sent did not happen')
})

synchronous('with the replicas lagging at the crash, still no acknowledged write is lost', async () => {
  const rejoinMs = await rejoin(syncCluster)
  const result = await crashAndCount(syncCluster, { table: 'acks_lagging', lagging: true })
  report(`synchronous ${result.names}, walsenders paused before the crash (old leader rejoined in ${ms(rejoinMs)})`, result)
  assert.ok(result.names.startsWith('ANY 1 ('), `the new leader is synchronous too (${result.names})`)
  assert.equal(result.lost, [], 'no acknowledged write was lost')
  // At most the commits a replica had confirmed just before the pause; after that, commits wait.
  assert.ok(
    result.ackedWhileLagging <= WRITERS,
    `${result.ackedWhileLagging} writes acknowledged while no replica received WAL (at most one in flight per writer)`,
  )
})

synchronous.run()

// ---

let asyncCluster
const asynchronous = suite('asynchronous: acknowledged writes across a leader crash')

asynchronous.before(async () => {
  asyncCluster = await startCluster({ migrate: false })
})

asynchronous.after(async () => {
  await asyncCluster.stop()
})

asynchronous('the loss is measured and reported, not asserted', async () => {
  const result = await crashAndCount(asyncCluster, { table: 'acks_crash' })
  report('asynchronous', result)
  assert.is(result.names, '', 'no synchronous standbys')
  assert.ok(result.acknowledged.length >= KILL_AFTER, 'writes were acknowledged before and after the crash')
  assert.equal(result.refusedPresent, [], 'a write refused before it was sent did not happen')
  // Not asserted: result.lost.length, the trade-off asynchronous replication makes.
})

asynchronous('with the replicas lagging at the crash, what was acknowledged meanwhile is lost', async () => {
  const rejoinMs = await rejoin(asyncCluster)
  const result = await crashAndCount(asyncCluster, { table: 'acks_lagging', lagging: true })
  report(`asynchronous, walsenders paused before the crash (old leader rejoined in ${ms(rejoinMs)})`, result)
  assert.ok(result.ackedWhileLagging > 0, 'the leader kept acknowledging writes the replicas had not received')
  // The trade-off, not a bug; asserting it shows that the check above can see a loss.
  assert.ok(result.lost.length > 0, `the writes acknowledged during the lag are missing on the new leader (${result.lost.length})`)
})

asynchronous.run()
