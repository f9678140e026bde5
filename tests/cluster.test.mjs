// @deno
// The local cluster against real PostgreSQL processes: what `up` builds,
// what down/up/destroy keep or remove, and the clear errors of the script.
// The library suite also runs under Deno; the script suite spawns
// scripts/cluster.mjs with Node, so it runs once, under Node.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'
import postgres from 'postgres'
import { ClusterError } from 'pgfollow'
import {
  destroy,
  down,
  findBinaries,
  freePort,
  isAlive,
  isPortFree,
  nodePaths,
  nodePid,
  reachableBinaries,
  readState,
  SERVER_ROOT,
  serverUser,
  status,
  stopServer,
  up,
} from 'pgfollow/cluster'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { startCluster } from './helpers/cluster.mjs'
import { until } from './helpers/wait.mjs'

const isDeno = typeof Deno !== 'undefined'
const NAMES = ['leader', 'replica1', 'replica2']

/** postgres.js clients of the running test; after.each ends them all. */
const clients = []
function client(url, options = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5, ...options })
  clients.push(sql)
  return sql
}
async function endClients() {
  await Promise.all(clients.splice(0).map((sql) => sql.end({ timeout: 1 })))
}

/** A hook whose error is printed: uvu swallows errors thrown by `before`. */
function loud(hook) {
  return async (context) => {
    try {
      await hook(context)
    } catch (error) {
      console.error(error)
      throw error
    }
  }
}

/** A parent dir the unprivileged server user can pass through (see helpers/cluster.mjs). */
function tempParent() {
  const parent = mkdtempSync(join(tmpdir(), 'pgfollow-test-'))
  chmodSync(parent, 0o755)
  return parent
}

/** Listens on a free port until close(): a port that is taken. */
async function takePort() {
  const port = await freePort()
  const server = createServer()
  await new Promise((resolve) => server.listen({ port, host: '127.0.0.1' }, resolve))
  return { port, close: () => new Promise((resolve) => server.close(resolve)) }
}

// ---

const cluster = suite('cluster')
let c

cluster.before(loud(async () => {
  c = await startCluster({ replicas: 2 })
}))
cluster.after.each(endClients)
cluster.after(async () => {
  await endClients()
  await c?.stop()
})

cluster('the leader is not in recovery and listens on its port', async () => {
  const [row] = await client(c.descriptor.leader)`select pg_is_in_recovery() as recovery, inet_server_port() as port`
  assert.is(row.recovery, false)
  assert.is(row.port, c.ports[0])
})

cluster('each replica is in recovery on its own port', async () => {
  assert.is(c.descriptor.replicas.length, 2)
  for (const [i, url] of c.descriptor.replicas.entries()) {
    const [row] = await client(url)`select pg_is_in_recovery() as recovery, inet_server_port() as port`
    assert.is(row.recovery, true)
    assert.is(row.port, c.ports[i + 1])
  }
})

cluster('each replica streams as replicator from its own active slot', async () => {
  const leader = client(c.descriptor.leader)
  const senders = await leader`select application_name, state, usename from pg_stat_replication order by application_name`
  assert.equal(
    senders.map((row) => [row.application_name, row.state, row.usename]),
    [['replica1', 'streaming', 'replicator'], ['replica2', 'streaming', 'replicator']],
  )
  const slots = await leader`select slot_name, active from pg_replication_slots order by slot_name`
  assert.equal(
    slots.map((row) => [row.slot_name, row.active]),
    [['pgfollow_replica1', true], ['pgfollow_replica2', true]],
  )
})

cluster('a row written on the leader appears on every replica', async () => {
  const url = `https://example.com/${crypto.randomUUID()}`
  const [{ id }] = await client(c.descriptor.leader)`insert into blogs (url) values (${url}) returning id`
  for (const replicaUrl of c.descriptor.replicas) {
    const replica = client(replicaUrl)
    // The row itself, not the result: an empty result is an array, and truthy.
    const row = await until(async () => (await replica`select url from blogs where id = ${id}`)[0], 5_000, `blog ${id} on a replica`, 10)
    assert.is(row.url, url)
  }
})

cluster('the migrated tables and the ledger exist on every replica', async () => {
  for (const url of c.descriptor.replicas) {
    const [tables] = await client(url)`
      select to_regclass('public.blogs') is not null as blogs,
             to_regclass('public.posts') is not null as posts,
             to_regclass('public.comments') is not null as comments`
    assert.equal({ ...tables }, { blogs: true, posts: true, comments: true })
    const ledger = await client(url)`select name from pgfollow_migrations order by name`
    assert.equal(ledger.map((row) => row.name), ['001_blog_model.sql'])
  }
})

cluster('the descriptor file is private and works for a plain postgres.js client', async () => {
  const file = join(c.dir, 'cluster.json')
  assert.is(statSync(file).mode & 0o777, 0o600)
  const descriptor = JSON.parse(readFileSync(file, 'utf8'))
  assert.equal(Object.keys(descriptor).sort(), ['leader', 'replicas'])
  assert.is(descriptor.replicas.length, 2)
  const [{ port }] = await client(descriptor.leader)`select inet_server_port() as port`
  assert.is(port, c.ports[0])
  for (const url of descriptor.replicas) {
    const [{ recovery }] = await client(url)`select pg_is_in_recovery() as recovery`
    assert.is(recovery, true)
  }
})

cluster('the replicator can replicate and cannot read tables', async () => {
  const leader = client(c.descriptor.leader)
  const [role] = await leader`
    select rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls,
           has_table_privilege('replicator', 'public.posts', 'select') as reads_posts
    from pg_roles where rolname = 'replicator'`
  assert.equal({ ...role }, {
    rolreplication: true,
    rolsuper: false,
    rolcreatedb: false,
    rolcreaterole: false,
    rolbypassrls: false,
    reads_posts: false,
  })
  // The replicas stream as this role (checked above); a database session is refused by pg_hba.
  const { replicatorPassword } = readState(c.dir)
  const replicator = client(`postgres://replicator:${encodeURIComponent(replicatorPassword)}@127.0.0.1:${c.ports[0]}/pgfollow`)
  try {
    await replicator`select count(*) from posts`
    assert.unreachable('the replicator read a table')
  } catch (error) {
    assert.is(error.code, '28000', error.message)
  }
})

cluster('status reports the leader and two streaming replicas', async () => {
  const result = await status(c.dir)
  assert.is(result.healthy, true)
  assert.equal(result.nodes.map((node) => [node.name, node.role, node.state, node.port]), [
    ['leader', 'leader', 'leader', c.ports[0]],
    ['replica1', 'replica', 'streaming', c.ports[1]],
    ['replica2', 'replica', 'streaming', c.ports[2]],
  ])
  for (const node of result.nodes) assert.not.match(node.url, readState(c.dir).password)
})

cluster('up on a running cluster changes nothing', async () => {
  const pids = NAMES.map((name) => c.pid(name))
  const stateBefore = readFileSync(join(c.dir, 'pgfollow.json'), 'utf8')
  const result = await up({ dir: c.dir })
  assert.is(result.action, 'already-running')
  assert.equal(result.started, [])
  assert.equal(NAMES.map((name) => c.pid(name)), pids)
  assert.is(readFileSync(join(c.dir, 'pgfollow.json'), 'utf8'), stateBefore)
})

cluster('down keeps the data and up starts the same nodes again', async () => {
  const url = `https://example.com/${crypto.randomUUID()}`
  const [{ id }] = await client(c.descriptor.leader)`insert into blogs (url) values (${url}) returning id`
  await endClients()
  const pids = NAMES.map((name) => c.pid(name))
  assert.equal((await down(c.dir)).sort(), NAMES)
  assert.ok(pids.every((pid) => !isAlive(pid)), 'every postmaster exited')
  const stopped = await status(c.dir)
  assert.is(stopped.healthy, false)
  assert.equal(stopped.nodes.map((node) => node.state), ['down', 'down', 'down'])

  const result = await up({ dir: c.dir })
  assert.is(result.action, 'started')
  assert.equal(result.started, NAMES)
  assert.equal(result.descriptor, c.descriptor)
  for (const nodeUrl of [c.descriptor.leader, ...c.descriptor.replicas]) {
    const [row] = await client(nodeUrl)`select url from blogs where id = ${id}`
    assert.is(row?.url, url)
  }
  assert.is((await status(c.dir)).healthy, true)
})

cluster('up clones again a replica whose slot the leader invalidated while it was down', async () => {
  const leader = client(c.descriptor.leader)
  const data = c.dataDir('replica2')
  writeFileSync(join(data, 'pgfollow-test-marker'), 'the old copy\n')
  assert.ok(await stopServer(data, 'fast'), 'replica2 stopped')
  // PostgreSQL 18 invalidates a slot idle past idle_replication_slot_timeout
  // at a checkpoint; replica1's slot is active, so only replica2's goes.
  await leader`alter system set idle_replication_slot_timeout = '1s'`
  await leader`select pg_reload_conf()`
  const url = `https://example.com/${crypto.randomUUID()}`
  await leader`insert into blogs (url) values (${url})`
  try {
    await until(
      async () => {
        await leader`checkpoint`
        const [slot] = await leader`select invalidation_reason from pg_replication_slots where slot_name = 'pgfollow_replica2'`
        return slot?.invalidation_reason === 'idle_timeout'
      },
      20_000,
      "replica2's slot invalidated",
    )
  } finally {
    await leader`alter system reset idle_replication_slot_timeout`
    await leader`select pg_reload_conf()`
  }
  const [other] = await leader`select invalidation_reason from pg_replication_slots where slot_name = 'pgfollow_replica1'`
  assert.is(other.invalidation_reason, null, 'the streaming replica keeps its slot')

  const messages = []
  const result = await up({ dir: c.dir, onProgress: (message) => messages.push(message) })
  assert.is(result.action, 'started')
  assert.equal(result.started, ['replica2'])
  assert.ok(
    messages.some((message) => /re-cloning replica2: its slot on the leader was invalidated \(idle_timeout\)/.test(message)),
    messages.join('\n'),
  )
  assert.not.ok(existsSync(join(data, 'pgfollow-test-marker')), 'the old copy was replaced')
  const [slot] = await leader`select active, invalidation_reason from pg_replication_slots where slot_name = 'pgfollow_replica2'`
  assert.equal({ ...slot }, { active: true, invalidation_reason: null })
  const [row] = await client(c.descriptor.replicas[1])`select url from blogs where url = ${url}`
  assert.is(row?.url, url, 'the write made while it was down arrives')
  assert.is((await status(c.dir)).healthy, true)
})

cluster('a taken port is a clear error that names --ports and creates nothing', async () => {
  const parent = tempParent()
  const taken = await takePort()
  try {
    const dir = join(parent, 'cluster')
    const ports = [await freePort(), taken.port, await freePort()]
    try {
      await up({ dir, ports })
      assert.unreachable('up started on a taken port')
    } catch (error) {
      assert.instance(error, ClusterError)
      assert.match(error.message, `Port ${taken.port} (for replica1) is already in use`)
      assert.match(error.message, '--ports')
    }
    assert.not.ok(existsSync(dir), 'no cluster dir was created')
  } finally {
    await taken.close()
    rmSync(parent, { recursive: true, force: true })
  }
})

cluster('destroy stops every server and removes the dir', async () => {
  const pids = NAMES.map((name) => c.pid(name))
  assert.ok(pids.every((pid) => isAlive(pid)))
  await destroy(c.dir)
  assert.ok(pids.every((pid) => !isAlive(pid)), 'every postmaster exited')
  assert.not.ok(existsSync(c.dir))
  for (const port of c.ports) assert.ok(await isPortFree(port), `port ${port} is free again`)
})

cluster.run()

// ---

// As root, with the checkout in root's home (mode 0700): the server user cannot
// reach the cluster dir nor node_modules, so the node dirs and a copy of the
// binaries go under SERVER_ROOT, and status/down/up/destroy still find them.
const closed = suite('a cluster dir inside a closed (0700) directory')
const asRoot = typeof process.getuid === 'function' && process.getuid() === 0
const closedTest = asRoot ? closed : closed.skip
let closedParent
let closedDir

closed.before(() => {
  if (!asRoot) console.log('  SKIPPED closed-directory tests: they need root (the servers then run as another user)')
  closedParent = mkdtempSync(join(tmpdir(), 'pgfollow-closed-'))
  chmodSync(closedParent, 0o700)
  closedDir = join(closedParent, 'checkout', '.pgfollow')
})

closed.after(async () => {
  if (existsSync(join(closedDir, 'pgfollow.json'))) await destroy(closedDir).catch(() => {})
  rmSync(closedParent, { recursive: true, force: true })
})

closedTest('the embedded binaries are copied where the server user can run them', async () => {
  // A checkout whose node_modules sits in the closed directory.
  const native = join(closedParent, 'native')
  symlinkSync(dirname(findBinaries().dir), native)
  const user = serverUser()
  const copy = reachableBinaries(user, findBinaries(join(native, 'bin')))
  assert.ok(copy.dir.startsWith(SERVER_ROOT + '/'), `copied to ${copy.dir}`)
  const version = await new Promise((resolvePromise, reject) =>
    execFile(
      'setpriv',
      [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', copy.postgres, '--version'],
      (error, stdout) => error ? reject(error) : resolvePromise(stdout),
    )
  )
  assert.match(version, /PostgreSQL/)
})

closedTest('up puts the node dirs under SERVER_ROOT; status, down, up and destroy find them', async () => {
  const ports = [await freePort(), await freePort()]
  const result = await up({ dir: closedDir, ports, replicas: 1, migrate: false, settings: { fsync: 'off' } })
  assert.is(result.action, 'created')
  const state = readState(closedDir)
  assert.ok(state.nodesDir?.startsWith(`${SERVER_ROOT}/clusters/`), `node dirs in ${state.nodesDir}`)
  assert.ok(nodePaths(closedDir, 'leader').dataDir.startsWith(state.nodesDir))
  assert.ok(existsSync(join(closedDir, 'cluster.json')), 'the descriptor stays in the cluster dir')
  assert.is((await status(closedDir)).healthy, true)
  assert.equal((await down(closedDir)).sort(), ['leader', 'replica1'])
  assert.is(nodePid(closedDir, 'leader'), null)
  assert.is((await up({ dir: closedDir, migrate: false })).action, 'started')
  assert.is((await status(closedDir)).healthy, true)
  await destroy(closedDir)
  assert.not.ok(existsSync(closedDir), 'the cluster dir is gone')
  assert.not.ok(existsSync(state.nodesDir), 'and so are the node dirs')
})

closed.run()

// ---

const script = suite('cluster.mjs')
// The script is a Node program: under Deno its tests are reported as skipped.
const scriptTest = isDeno ? script.skip : script
const SCRIPT = fileURLToPath(new URL('../scripts/cluster.mjs', import.meta.url))
const MIGRATE = fileURLToPath(new URL('../scripts/migrate.mjs', import.meta.url))
let parent
let dir
let ports

/** Runs a script with Node; resolves with its exit code and output (colours stripped). */
function runScript(file, args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, stdout: stripVTControlCharacters(stdout), stderr: stripVTControlCharacters(stderr) })
    })
  })
}
const cli = (...args) => runScript(SCRIPT, [...args, '--dir', dir])

if (!isDeno) {
  script.before(loud(async () => {
    parent = tempParent()
    dir = join(parent, 'cluster')
    ports = [await freePort(), await freePort()]
  }))
  script.after.each(endClients)
  script.after(async () => {
    await endClients()
    if (dir) await destroy(dir).catch((error) => console.error(error))
    if (parent) rmSync(parent, { recursive: true, force: true })
  })
}

scriptTest('up prints every node with its URL, without the password', async () => {
  // --synchronous first: the leader lists its standby before any exists, which must not block up.
  const chosen = randomBytes(12).toString('hex')
  const args = ['up', '--ports', ports.join(','), '--replicas', '1', '--no-migrate', '--synchronous', 'first', '--dir', dir]
  const result = await runScript(SCRIPT, args, { PGFOLLOW_PASSWORD: chosen })
  assert.is(result.code, 0, result.stderr)
  assert.match(result.stdout, 'Created the cluster')
  const { password } = readState(dir)
  assert.is(password, chosen, 'PGFOLLOW_PASSWORD is the superuser password of a new cluster')
  assert.not.match(result.stdout + result.stderr, password)
  assert.match(result.stdout, new RegExp(`leader\\s+leader\\s+${ports[0]}\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${ports[0]}/pgfollow`))
  assert.match(result.stdout, new RegExp(`replica1\\s+replica\\s+${ports[1]}\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${ports[1]}/pgfollow`))
  assert.match(result.stderr, 'waiting for replica1 to stream', 'progress is shown')
  assert.is(statSync(join(dir, 'cluster.json')).mode & 0o777, 0o600)
  const descriptor = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8'))
  const [sender] = await client(descriptor.leader)`select application_name, sync_state from pg_stat_replication`
  assert.equal({ ...sender }, { application_name: 'replica1', sync_state: 'sync' })
})

scriptTest('--no-migrate left the database empty; migrate.mjs migrates the cluster PGFOLLOW_CLUSTER names', async () => {
  const descriptor = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8'))
  const [before] = await client(descriptor.leader)`select to_regclass('public.posts') as posts`
  assert.is(before.posts, null)
  const result = await runScript(MIGRATE, [], { PGFOLLOW_CLUSTER: join(dir, 'cluster.json') })
  assert.is(result.code, 0, result.stderr)
  assert.match(result.stdout, 'Applied 001_blog_model.sql')
  // migrate returns once replicas replayed: no poll needed.
  const [after] = await client(descriptor.replicas[0])`select to_regclass('public.posts') is not null as posts`
  assert.is(after.posts, true)
  const again = await runScript(MIGRATE, ['--cluster', join(dir, 'cluster.json'), '--json'])
  assert.is(again.code, 0, again.stderr)
  assert.equal(JSON.parse(again.stdout).applied, [])
})

scriptTest('status --json is machine-readable and exits 0 when every node runs', async () => {
  const result = await cli('status', '--json')
  assert.is(result.code, 0, result.stderr)
  const parsed = JSON.parse(result.stdout)
  assert.is(parsed.healthy, true)
  assert.equal(parsed.nodes.map((node) => [node.name, node.role, node.state]), [['leader', 'leader', 'leader'], ['replica1', 'replica', 'streaming']])
})

scriptTest('up on a running cluster says so', async () => {
  const pid = nodePid(dir, 'leader')
  const result = await cli('up')
  assert.is(result.code, 0, result.stderr)
  assert.match(result.stdout, 'already running; nothing changed')
  assert.is(nodePid(dir, 'leader'), pid)
})

scriptTest('a taken port is one red line that names --ports, no stack trace', async () => {
  const taken = await takePort()
  try {
    const other = join(parent, 'other')
    const result = await runScript(SCRIPT, ['up', '--dir', other, '--ports', `${taken.port},${await freePort()}`])
    assert.is(result.code, 1)
    assert.match(result.stderr, `Port ${taken.port} (for leader) is already in use`)
    assert.match(result.stderr, 'choose other ports with --ports')
    assert.not.match(result.stderr, /\n\s+at /, 'no stack trace')
    assert.not.ok(existsSync(other))
  } finally {
    await taken.close()
  }
})

scriptTest('missing binaries are named, and PG_BIN is the way out', async () => {
  const other = join(parent, 'other')
  const result = await runScript(SCRIPT, ['up', '--dir', other, '--ports', `${await freePort()},${await freePort()}`], { PG_BIN: '/nonexistent/bin' })
  assert.is(result.code, 1)
  assert.match(result.stderr, 'PG_BIN=/nonexistent/bin has no executable initdb')
  assert.not.ok(existsSync(other))
})

scriptTest('a dir that belongs to something else is refused and left alone', async () => {
  const result = await runScript(SCRIPT, ['up', '--dir', parent, '--ports', `${await freePort()},${await freePort()}`])
  assert.is(result.code, 1)
  assert.match(result.stderr, 'is not empty and holds no pgfollow cluster')
  const destroyed = await runScript(SCRIPT, ['destroy', '--dir', parent])
  assert.is(destroyed.code, 1)
  assert.match(destroyed.stderr, 'No pgfollow cluster in')
  assert.ok(existsSync(join(dir, 'pgfollow.json')), 'nothing was removed')
})

scriptTest('a node that fails to start shows the end of its log; status exits 1 while it is down', async () => {
  const stopped = await cli('down')
  assert.is(stopped.code, 0, stopped.stderr)
  assert.match(stopped.stdout, 'Stopped leader, replica1; the data is kept')
  const autoConf = join(nodePaths(dir, 'replica1').dataDir, 'postgresql.auto.conf')
  const original = readFileSync(autoConf, 'utf8')
  appendFileSync(autoConf, "shared_buffers = 'lots'\n")
  try {
    const result = await cli('up')
    assert.is(result.code, 1)
    assert.match(result.stderr, 'The replica1 server failed to start')
    assert.match(result.stderr, 'invalid value for parameter "shared_buffers"', 'the log tail is shown')
    assert.not.match(result.stderr, /\n\s+at /, 'no stack trace')
    const partial = await cli('status')
    assert.is(partial.code, 1)
    assert.match(partial.stdout, /replica1\s+replica\s+down/)
    assert.match(partial.stdout, 'Down: replica1')
  } finally {
    writeFileSync(autoConf, original)
  }
  const repaired = await cli('up')
  assert.is(repaired.code, 0, repaired.stderr)
  assert.match(repaired.stdout, 'Started replica1')
})

scriptTest('destroy stops every server and removes the dir', async () => {
  const pids = ['leader', 'replica1'].map((name) => nodePid(dir, name))
  assert.ok(pids.every((pid) => isAlive(pid)))
  const result = await cli('destroy')
  assert.is(result.code, 0, result.stderr)
  assert.ok(pids.every((pid) => !isAlive(pid)), 'every postmaster exited')
  assert.not.ok(existsSync(dir))
  const status = await cli('status')
  assert.is(status.code, 1)
  assert.match(status.stderr, 'No pgfollow cluster in')
})

script.run()
