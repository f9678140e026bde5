// @exclusive
// scripts/failover.mjs against a real cluster in synchronous mode: kill the
// leader (immediate shutdown, as a crash), fail over, and check that one sql
// tag instance kept reading throughout and writes again without a restart,
// that writes land on the new leader and no acknowledged one is missing, that
// the other replica streams from it, and that `cluster.mjs up` brings the old
// leader back as a replica. Then a planned switchover with --promote and
// --rejoin. Node only: the scripts under test are spawned with Node.
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { nodePaths, readState, stopServer } from 'pgfollow/cluster'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'
import { sleep } from './helpers/wait.mjs'

const scriptPath = (name) => fileURLToPath(new URL(`../scripts/${name}`, import.meta.url))

function script(name, args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [scriptPath(name), ...args], { env: { ...process.env, NO_COLOR: '1' }, timeout: 90_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr })
    })
  })
}

async function eventually(check, { timeoutMs = 15_000, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await Promise.resolve().then(check).catch(() => null)
    if (value) return value
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await sleep(100)
  }
}

/** postgres.js clients opened by a test; closed at the end. */
const clients = []
function client(port) {
  const state = readState(cluster.dir)
  const sql = postgres(`postgres://${state.superuser}:${encodeURIComponent(state.password)}@127.0.0.1:${port}/${state.database}`, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 5,
  })
  clients.push(sql)
  return sql
}

/**
 * What an application does through all of it: one sql tag, writers and
 * readers in a loop. Acknowledged writes are recorded by id.
 */
function application(sql) {
  const stats = { acked: [], writeErrors: [], reads: 0, readErrors: [], readsAt: [] }
  let running = true
  const writer = (async () => {
    while (running) {
      try {
        const [row] = await sql`insert into blogs (url) values (${'https://failover.example'}) returning id`
        stats.acked.push(Number(row.id))
      } catch (error) {
        stats.writeErrors.push(error)
        await sleep(50)
      }
      await sleep(20)
    }
  })()
  const readers = Array.from({ length: 3 }, async () => {
    while (running) {
      try {
        await sql`select count(*) from posts`
        stats.reads++
        stats.readsAt.push(Date.now())
      } catch (error) {
        stats.readErrors.push(error)
        await sleep(50)
      }
      await sleep(10)
    }
  })
  return {
    stats,
    async stop() {
      running = false
      await Promise.all([writer, ...readers])
    },
  }
}

const cluster = await startCluster({ synchronous: 'any' })
// A short ban back-off: the old leader, down for a while, is taken back for reads within seconds.
const sql = connect({ ...cluster.descriptor, monitorInterval: 200, connectTimeout: 1000, ban: { base: 100, max: 1000 } })

// ---
const crash = suite('failover after the leader crashes (synchronous mode)')

crash.after(async () => {
  await sql.end({ timeout: 1 })
  await Promise.all(clients.map((c) => c.end({ timeout: 1 })))
})

crash('--promote with a name the cluster does not have changes nothing', async () => {
  const { code, stderr } = await script('failover.mjs', ['--dir', cluster.dir, '--promote', 'replica9'])
  assert.is(code, 1)
  assert.match(stderr, /--promote replica9: the cluster has no node of that name/)
  assert.ok(cluster.pid('leader'), 'the leader still runs')
})

crash('the tag keeps reading, writes again on the new leader, and no acknowledged write is lost', async () => {
  await sql.refresh()
  const app = application(sql)
  await sleep(800)
  const killedAt = Date.now()
  await stopServer(cluster.dataDir('leader'), 'immediate') // a crash: no shutdown checkpoint, no last WAL sent
  const writesBefore = app.stats.acked.length
  await sleep(300)

  const { code, stdout, stderr } = await script('failover.mjs', ['--dir', cluster.dir, '--json'])
  assert.is(code, 0, stderr)
  const result = JSON.parse(stdout)
  assert.is(result.previous, 'leader')
  assert.is(result.previousWasRunning, false)
  assert.ok(['replica1', 'replica2'].includes(result.promoted), result.promoted)
  const other = result.promoted === 'replica1' ? 'replica2' : 'replica1'
  assert.equal(result.repointed, [other])

  // Writes resume through the same tag, without a restart.
  await eventually(() => app.stats.acked.length > writesBefore + 5, { what: 'writes through the tag after the failover' })
  await app.stop()
  assert.ok(app.stats.readsAt.some((at) => at > killedAt && at < killedAt + 1000), 'reads went on while there was no leader')
  assert.is(app.stats.readErrors.length, 0, `reads failed: ${app.stats.readErrors.map((e) => e.message).join('; ')}`)
  for (const error of app.stats.writeErrors) assert.instance(error, LeaderUnavailableError, `a write failed with ${error.code}: ${error.message}`)

  const state = readState(cluster.dir)
  const promoted = state.nodes.find((node) => node.name === result.promoted)
  const newLeader = client(promoted.port)
  const [{ in_recovery }] = await newLeader`select pg_is_in_recovery() as in_recovery`
  assert.is(in_recovery, false, 'the promoted node accepts writes')
  const tagLeader = sql.status().find((node) => node.role === 'leader')
  assert.match(tagLeader.url, new RegExp(`:${promoted.port}/`), 'the tag moved writes to the promoted node')

  // Synchronous mode: every write acknowledged before or after the crash is on the new leader.
  const [{ found }] = await newLeader`select count(*)::int as found from blogs where id = any(${app.stats.acked})`
  assert.is(found, app.stats.acked.length, `${app.stats.acked.length - found} acknowledged write(s) missing`)

  // The descriptor names the new leader, and the old one is fenced.
  const descriptor = JSON.parse(readFileSync(join(cluster.dir, 'cluster.json'), 'utf8'))
  assert.match(descriptor.leader, new RegExp(`:${promoted.port}/`))
  assert.is(descriptor.replicas.length, 2)
  const old = state.nodes.find((node) => node.name === 'leader')
  assert.equal([old.role, old.fenced], ['replica', true])
  assert.ok(existsSync(join(nodePaths(cluster.dir, 'leader').dataDir, 'standby.signal')), 'fenced: started by anyone it can only be a standby')

  // The other replica streams from the new leader, and stays synchronous.
  const otherPort = state.nodes.find((node) => node.name === other).port
  const [sender] = await client(otherPort)`select status, sender_port from pg_stat_wal_receiver`
  assert.equal([sender.status, sender.sender_port], ['streaming', promoted.port])
  const [{ names }] = await newLeader`select current_setting('synchronous_standby_names') as names`
  assert.ok(names.includes(`"${other}"`) && names.includes('"leader"'), names)
})

crash('cluster.mjs up brings the old leader back as a replica of the new one', async () => {
  const { code, stderr } = await script('cluster.mjs', ['up', '--dir', cluster.dir])
  assert.is(code, 0, stderr)
  assert.match(stderr, /re-cloning leader/)
  const state = readState(cluster.dir)
  const old = state.nodes.find((node) => node.name === 'leader')
  assert.is(old.fenced, undefined)
  const newLeader = client(state.nodes.find((node) => node.role === 'leader').port)
  const rows = await newLeader`select application_name, state from pg_stat_replication order by application_name`
  assert.ok(rows.some((row) => row.application_name === 'leader' && row.state === 'streaming'), JSON.stringify(rows))
  const oldLeader = client(old.port)
  const [{ in_recovery }] = await oldLeader`select pg_is_in_recovery() as in_recovery`
  assert.is(in_recovery, true)
  // The tag reads from it again once its monitor sees it as a replica.
  await eventually(() => sql.status().find((node) => node.url.includes(`:${old.port}/`))?.state === 'healthy', {
    what: 'the tag taking the old leader back',
  })

  const check = await script('lagcheck.mjs', ['--cluster', join(cluster.dir, 'cluster.json'), '--once', '--json'])
  assert.is(check.code, 0, check.stdout)
})

crash.run()

// ---
const planned = suite('a planned switchover with --promote and --rejoin')

planned.after(async () => {
  await cluster.stop()
})

planned('promotes the named replica, stops the old leader cleanly and rejoins it at once', async () => {
  const state = readState(cluster.dir)
  const current = state.nodes.find((node) => node.role === 'leader').name
  const target = state.nodes.find((node) => node.role === 'replica' && node.name !== 'leader').name
  const { code, stdout, stderr } = await script('failover.mjs', ['--dir', cluster.dir, '--promote', target, '--rejoin', '--json'])
  assert.is(code, 0, stderr)
  const result = JSON.parse(stdout)
  assert.equal([result.previous, result.promoted, result.previousWasRunning], [current, target, true])
  assert.equal(result.rejoined, [current])
  assert.ok(result.nodes.every((node) => node.state === 'leader' || node.state === 'streaming'), JSON.stringify(result.nodes))
  assert.is(result.nodes.find((node) => node.name === target).role, 'leader')
})

planned.run()
