// Only nodes that follow the leader serve reads, on a real cluster: after a
// failover, the fenced old leader started by hand (a standby that streams
// from nobody, with rows the cluster lost) serves none, for a tag that knew
// it as the leader and for one given a descriptor that lists it; a node of
// another cluster is named in a warning and serves none; lagcheck and
// `status` call such a node what it is, with exit 1; session tokens of
// another cluster or from a position the leader never reached are reset
// with a warning instead of pinning the session to the leader.
// Node only: it fails over and restarts servers by hand.
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { connect } from 'pgfollow'
import { failover, findBinaries, nodePaths, serverUser, startServer, status } from 'pgfollow/cluster'
import { judgeLag, lagSnapshot } from 'pgfollow/ops'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'
import { sleep } from './helpers/wait.mjs'

const NOT_FOLLOWING = ['not-following', 'diverged', 'wrong-upstream']
const portOf = (url) => Number(/:(\d+)\//.exec(url)[1])
const measured = (line) => console.log(`  measured: ${line}`)

async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** Reads through a tag: how many each port served, and how many saw the rows the cluster lost. */
async function readMany(sql, count) {
  const byPort = {}
  let sawLost = 0
  for (let i = 0; i < count; i++) {
    const [row] = await sql`select inet_server_port() as port, (select count(*)::int from blogs where url = 'lost') as lost`
    byPort[row.port] = (byPort[row.port] ?? 0) + 1
    if (row.lost > 0) sawLost++
  }
  return { byPort, sawLost }
}

const cluster = await startCluster({ replicas: 2 })
const other = await startCluster({ replicas: 1, migrate: false })
const [oldLeaderPort, replica1Port, replica2Port] = cluster.ports
// A check times out after min(monitorInterval, connectTimeout): 250 ms leaves room on a loaded machine.
const fast = { monitorInterval: 250, connectTimeout: 2000, ban: { base: 100, max: 500 } }
/** A tag that connected before the failover: the old leader is its `leader`. */
const before = connect({ ...cluster.descriptor, ...fast })
const beforeEvents = []
for (const name of ['retire', 'restore', 'leader', 'warning']) before.on(name, (detail) => beforeEvents.push({ event: name, ...detail }))
const clients = []
const client = (url) => {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  clients.push(sql)
  return sql
}
let after = null
let descriptorAfter = null

// ---
const fenced = suite('a fenced old leader started by hand')

fenced('serves no read, to a tag that knew it as the leader and to one whose descriptor lists it', async () => {
  await before.refresh()
  const leader = client(cluster.descriptor.leader)
  // The replicas stop streaming; what the leader acknowledges now, the cluster loses in the failover.
  for (const url of cluster.descriptor.replicas) {
    const replica = client(url)
    await replica`alter system set primary_conninfo = ''`
    await replica`select pg_reload_conf()`
  }
  await until(async () => (await leader`select count(*)::int as n from pg_stat_replication`)[0].n === 0, 10_000, 'the walsenders to stop')
  await leader`insert into blogs (url) select 'lost' from generate_series(1, 50)`
  await leader.end()

  const result = await failover({ dir: cluster.dir, promote: 'replica1' })
  assert.is(result.promoted, 'replica1')
  descriptorAfter = result.descriptor
  assert.ok(descriptorAfter.replicas.some((url) => portOf(url) === oldLeaderPort), 'the descriptor still lists the old leader, as a replica')

  // By hand, as a supervisor would: it comes up read-only (standby.signal) and streams from nobody.
  const { dataDir, logFile } = nodePaths(cluster.dir, 'leader')
  await startServer({ binaries: findBinaries(), user: serverUser(), dataDir, logFile, name: 'leader' })
  const oldLeader = client(cluster.descriptor.leader)
  const [{ recovery, lost }] = await oldLeader`select pg_is_in_recovery() as recovery, (select count(*)::int from blogs where url = 'lost') as lost`
  assert.ok(recovery && lost === 50, `the old leader is a standby holding the 50 lost rows (${recovery}, ${lost})`)

  after = connect({ ...descriptorAfter, ...fast })
  const afterEvents = []
  after.on('retire', (detail) => afterEvents.push(detail))
  after.on('warning', () => {})
  await until(async () => (await before`insert into blogs (url) values ('kept') returning 1`).length === 1, 15_000, 'writes on the new leader')
  await before.refresh()
  await after.refresh()
  await after.refresh()

  const oldByBefore = await readMany(before, 200)
  const oldByAfter = await readMany(after, 200)
  measured(
    `reads served by the fenced old leader: ${oldByBefore.byPort[oldLeaderPort] ?? 0}/200 (tag connected before), ` +
      `${oldByAfter.byPort[oldLeaderPort] ?? 0}/200 (new descriptor); reads that saw lost rows: ${oldByBefore.sawLost + oldByAfter.sawLost}`,
  )
  for (const [tag, reads] of [['before', oldByBefore], ['after', oldByAfter]]) {
    assert.is(reads.byPort[oldLeaderPort] ?? 0, 0, `${tag}: no read from the old leader (${JSON.stringify(reads.byPort)})`)
    assert.is(reads.sawLost, 0, `${tag}: no read saw the lost rows`)
    assert.ok((reads.byPort[replica2Port] ?? 0) > 0, `${tag}: the replica that follows serves reads (${JSON.stringify(reads.byPort)})`)
  }

  for (const sql of [before, after]) {
    // A check that timed out on a loaded machine bans a node for a moment: wait for the verdict itself.
    const oldState = () => sql.status().find((node) => portOf(node.url) === oldLeaderPort).state
    await until(async () => (await sql.refresh(), NOT_FOLLOWING.includes(oldState())), 10_000, `a follow verdict (${oldState()})`)
    const nodes = sql.status()
    const old = nodes.find((node) => portOf(node.url) === oldLeaderPort)
    assert.is(old.name, 'leader', 'named by its cluster_name, not by its place in the descriptor')
    assert.is(old.role, 'replica')
    assert.ok(NOT_FOLLOWING.includes(old.state), `its state says why: ${old.state}`)
    const promoted = nodes.find((node) => node.role === 'leader')
    assert.is(promoted.name, 'replica1', 'the promoted node keeps its name')
    assert.is(nodes.find((node) => portOf(node.url) === replica2Port).state, 'healthy')
  }
  const retired = afterEvents.find((event) => event.name === 'leader')
  assert.ok(retired && NOT_FOLLOWING.includes(retired.reason), `a retire event with a reason: ${JSON.stringify(afterEvents)}`)
  assert.ok(beforeEvents.some((event) => event.event === 'retire' && event.name === 'leader' && NOT_FOLLOWING.includes(event.reason)))
  assert.ok(beforeEvents.some((event) => event.event === 'leader' && event.name === 'replica1'), 'the leader event names the promoted node')
})

fenced('comes back once it follows the new leader again', async () => {
  // Re-cloned from the new leader (what `cluster.mjs up` does to a fenced node), it streams and serves reads again.
  const { up } = await import('pgfollow/cluster')
  await up({ dir: cluster.dir, migrate: false })
  await until(
    async () => {
      await after.refresh()
      return after.status().find((node) => portOf(node.url) === oldLeaderPort).state === 'healthy'
    },
    20_000,
    'the re-cloned old leader to serve reads again',
  )
  const reads = await readMany(after, 60)
  assert.ok((reads.byPort[oldLeaderPort] ?? 0) > 0, `it serves reads again: ${JSON.stringify(reads.byPort)}`)
  assert.is(reads.sawLost, 0)
})

fenced.run()

// ---
const foreign = suite('a node of another cluster')

foreign('is named in a warning and never read from', async () => {
  const warnings = []
  const retires = []
  const foreignUrl = other.descriptor.replicas[0]
  const sql = connect({ leader: descriptorAfter.leader, replicas: [foreignUrl, cluster.descriptor.replicas[1]], ...fast })
  sql.on('warning', (warning) => warnings.push(warning.message))
  sql.on('retire', (event) => retires.push(event))
  try {
    await sql.refresh()
    await sql.refresh()
    const reads = await readMany(sql, 100)
    const foreignPort = portOf(foreignUrl)
    measured(`reads served by a node of another cluster: ${reads.byPort[foreignPort] ?? 0}/100; warning: ${warnings[0]}`)
    assert.is(reads.byPort[foreignPort] ?? 0, 0, JSON.stringify(reads.byPort))
    const node = sql.status().find((n) => portOf(n.url) === foreignPort)
    assert.is(node.state, 'other-cluster')
    // Its cluster_name (replica1) is taken by the new leader: it keeps host:port.
    assert.is(node.name, `127.0.0.1:${foreignPort}`)
    assert.ok(warnings.some((message) => message.includes(node.name) && /another cluster/.test(message)), warnings.join(' | '))
    assert.ok(retires.some((event) => event.name === node.name && event.reason === 'other-cluster'))
  } finally {
    await sql.end({ timeout: 1 })
  }
})

foreign.run()

// ---
const tokens = suite('session tokens the leader cannot honour')

tokens('a token of another cluster, or of a position never reached, is reset with a warning, not pinned to the leader', async () => {
  const otherSql = connect({ ...other.descriptor, ...fast })
  const otherSession = otherSql.session()
  await otherSql.refresh()
  await otherSession`create table if not exists noise (x int)`
  const otherToken = otherSession.token
  await otherSql.end({ timeout: 1 })
  assert.match(otherToken, /^[0-9A-F]+\/[0-9A-F]+@[0-9a-f]{8}\.1$/, `a bound token: ${otherToken}`)

  const warnings = []
  after.on('warning', (warning) => warnings.push(warning))
  for (const token of [otherToken, 'FF/FFFFFFFF', `FF/FFFFFFFF@${otherToken.split('@')[1]}`]) {
    warnings.length = 0
    const session = after.session({ after: token })
    const started = performance.now()
    const ports = []
    // A reset session is not pinned to the leader: a replica serves it as soon as one has what the leader flushed.
    for (let i = 0; i < 40 && !ports.some((port) => port !== replica1Port); i++) {
      ports.push((await session`select inet_server_port() as port`)[0].port)
      if (ports.length % 10 === 0) await after.refresh()
    }
    const took = performance.now() - started
    measured(`token ${token}: first replica read after ${ports.length} read(s), ${took.toFixed(0)} ms; warning: ${warnings[0]?.message}`)
    assert.is(warnings.length, 1, `one warning for ${token}`)
    assert.is(warnings[0].reason, 'session-token')
    assert.ok(ports.some((port) => port !== replica1Port), `the session is not pinned to the leader (${ports})`)
    assert.ok(!session.token.startsWith('FF/'), `the session's token left the forged position: ${session.token}`)
  }

  // A token of this cluster is honoured: read-your-writes across sessions, without a warning.
  warnings.length = 0
  const writer = after.session()
  const [row] = await writer`insert into blogs (url) values ('token') returning id`
  const token = writer.token
  assert.match(token, /@[0-9a-f]{8}\.2$/, `bound to this cluster, timeline 2: ${token}`)
  const reader = after.session({ after: token })
  assert.is((await reader`select id from blogs where id = ${row.id}`).length, 1)
  const plain = after.session({ after: token.split('@')[0] })
  assert.is((await plain`select id from blogs where id = ${row.id}`).length, 1, 'a plain LSN token of an earlier version still works')
  assert.is(warnings.length, 0, warnings.map((w) => w.message).join(' | '))
})

tokens.run()

// ---
const operators = suite('lagcheck and status see it too')

operators.after(async () => {
  await Promise.all([before.end({ timeout: 1 }), after?.end({ timeout: 1 })])
  await Promise.all(clients.map((sql) => sql.end({ timeout: 1 })))
  await Promise.all([cluster.stop(), other.stop()])
})

operators('a node of another cluster: lagcheck exits 1 and says so', async () => {
  const descriptor = { leader: descriptorAfter.leader, replicas: [...descriptorAfter.replicas, other.descriptor.replicas[0]] }
  const snapshot = await lagSnapshot(descriptor)
  const verdict = judgeLag(snapshot)
  const foreignRow = snapshot.replicas.find((replica) => portOf(replica.url) === portOf(other.descriptor.replicas[0]))
  assert.is(foreignRow.state, 'other-cluster')
  assert.is(verdict.exitCode, 1)
  assert.ok(verdict.problems.some((problem) => /another cluster/.test(problem)), verdict.problems.join('; '))
  const file = join(cluster.dir, 'with-foreign.json')
  writeFileSync(file, JSON.stringify(descriptor))
  const script = fileURLToPath(new URL('../scripts/lagcheck.mjs', import.meta.url))
  const run = await new Promise((resolve) =>
    execFile(
      process.execPath,
      [script, '--cluster', file, '--once'],
      { env: { ...process.env, NO_COLOR: '1' } },
      (error, stdout) => resolve({ code: error ? error.code : 0, stdout }),
    )
  )
  assert.is(run.code, 1)
  assert.match(run.stdout, /other-cluster/)
})

operators('a standby that streams from nobody: status and lagcheck call it not following, exit 1', async () => {
  const replica2 = client(cluster.descriptor.replicas[1])
  await replica2`alter system set primary_conninfo = ''`
  await replica2`select pg_reload_conf()`
  await until(async () => (await status(cluster.dir)).nodes.find((node) => node.name === 'replica2').state === 'not-following', 10_000, 'status')
  const result = await status(cluster.dir)
  assert.is(result.healthy, false)
  const snapshot = await lagSnapshot(descriptorAfter)
  assert.is(snapshot.replicas.find((replica) => replica.name === 'replica2').state, 'not-following')
  assert.is(judgeLag(snapshot).exitCode, 1)
})

operators.run()
