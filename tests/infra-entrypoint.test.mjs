// @needs /usr/lib/postgresql/15/bin/pg_ctl apt-get install postgresql-15 postgresql-client-15 (or run the file directly with PG15_BIN)
// The container scripts of infra/, run for real without Docker: a local
// PostgreSQL 15 leader (Debian's packages) is set up with the leader's init
// script, then the replica entrypoint clones it, restarts without cloning
// again and streams through the same slot. Mocks cannot show any of this.
// As root (like Docker) the entrypoint itself hands its secrets to the
// postgres user and steps down to it; otherwise it runs as we are.
// Run: node tests/infra-entrypoint.test.mjs   (PG15_BIN overrides the binaries)
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { tsImport } from 'tsx/esm/api'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const BIN = process.env.PG15_BIN || '/usr/lib/postgresql/15/bin'
const MAJOR = 15
const SUPERUSER_PASSWORD = 'superuserSecret15'
const REPLICATOR_PASSWORD = 'replicatorSecret15'
const SLOT = 'pgfollow_replica1'
/** The init script runs a few statements: seconds at most, unless a commit waits for a standby. */
const INIT_TIMEOUT_MS = 15_000
const entrypointPath = fileURLToPath(new URL('../infra/container/pgfollow-entrypoint.sh', import.meta.url))
const initScriptPath = fileURLToPath(new URL('../infra/container/leader-init.sh', import.meta.url))
const healthcheckPath = fileURLToPath(new URL('../infra/container/pgfollow-healthcheck.sh', import.meta.url))

const infra = await tsImport('./fixtures/infra-modules.ts', import.meta.url)
const asRoot = process.getuid() === 0
const serverUser = asRoot ? idOf('postgres') : { uid: process.getuid(), gid: process.getgid(), name: process.env.USER }

/** Every server this file started, by pid, so nothing outlives it. */
const started = new Set()
process.on('exit', () => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
})

const ctx = {}
// Bounded: whatever hangs, the file ends within a minute and leaves no server.
setTimeout(() => {
  console.error('tests/infra-entrypoint.test.mjs took longer than 240 s; stopping its servers')
  process.exit(1)
}, 240_000).unref()
let entrypointRuns = 0

const entrypoint = suite('replica entrypoint against a local leader')

entrypoint.before(async () => {
  try {
    await setUp()
  } catch (error) {
    // uvu reports a failing before hook as zero tests run; say why, and fail.
    console.error(error)
    process.exitCode = 1
    throw error
  }
})

async function setUp() {
  assert.ok(existsSync(join(BIN, 'postgres')), `PostgreSQL 15 is missing at ${BIN}: apt-get install postgresql-15 (.ci/run installs it)`)
  assert.ok(serverUser, 'running as root needs a postgres user to run the servers as')
  const dir = mkdtempSync(join(tmpdir(), 'pgfollow-entrypoint-'))
  chmodSync(dir, 0o755)
  ctx.dir = dir
  ctx.leaderPort = await freePort()
  ctx.replicaPort = await freePort()
  ctx.socketDir = ownedDir(join(dir, 'sock'))
  ctx.hbaFile = join(dir, 'pg_hba.conf')
  // The same pg_hba the containers get: shared hbaLines over `samenet`,
  // which covers loopback here as it covers the Docker network there.
  writeFileSync(ctx.hbaFile, infra.hbaFile([]))
  chmodSync(ctx.hbaFile, 0o644)
  ctx.flags = [
    ...infra.toServerFlags(infra.serverSettings({ listen: '127.0.0.1', replicaNames: ['replica1'], major: MAJOR })),
    '-c',
    `hba_file=${ctx.hbaFile}`,
    '-c',
    `unix_socket_directories=${ctx.socketDir}`,
  ]

  // Leader, as the postgres image sets it up: initdb, then a temporary
  // server on the socket only, started with the node's own flags plus
  // listen_addresses='' (docker-entrypoint.sh, docker_temp_server_start),
  // which runs the init script (as postgres, psql on the socket, PGPASSWORD
  // set); then the real server. The flags are those of `synchronous: any`:
  // the temporary server then names a standby that can never connect.
  const pwfile = ownedFile(join(dir, 'superuser-password'), SUPERUSER_PASSWORD)
  ctx.leaderData = ownedDir(join(dir, 'leader'), 0o700)
  run(join(BIN, 'initdb'), ['-D', ctx.leaderData, '-U', 'postgres', `--pwfile=${pwfile}`, '-A', 'scram-sha-256', '--no-sync'], { user: serverUser })
  const synchronousFlags = [
    ...infra.toServerFlags(infra.serverSettings({ listen: '*', replicaNames: ['replica1'], synchronous: 'any', major: MAJOR })),
    '-c',
    `hba_file=${ctx.hbaFile}`,
    '-c',
    `unix_socket_directories=${ctx.socketDir}`,
  ]
  const temporary = startServer(
    join(BIN, 'postgres'),
    [
      '-D',
      ctx.leaderData,
      ...synchronousFlags,
      '-c',
      'listen_addresses=',
      '-p',
      String(ctx.leaderPort),
    ],
    {},
    serverUser,
  )
  await waitReady(ctx.leaderPort, temporary, 30_000, ctx.socketDir)

  const sqlDir = ownedDir(join(dir, 'sql'))
  for (const [file, text] of Object.entries(infra.replicationSql())) ownedFile(join(sqlDir, file), text)
  const leaderSecrets = ownedDir(join(dir, 'leader-secrets'), 0o700)
  ownedFile(join(leaderSecrets, 'replicator_password'), REPLICATOR_PASSWORD, 0o600)
  const initStarted = Date.now()
  // Bounded: a commit waiting for a standby would wait forever.
  ctx.init = spawnSync('sh', [initScriptPath], {
    encoding: 'utf8',
    timeout: INIT_TIMEOUT_MS,
    env: {
      ...process.env,
      PATH: `${BIN}:${process.env.PATH}`,
      LC_ALL: 'C',
      POSTGRES_USER: 'postgres',
      POSTGRES_DB: 'postgres',
      PGFOLLOW_DATABASE: infra.DATABASE,
      PGHOST: ctx.socketDir,
      PGPORT: String(ctx.leaderPort),
      PGPASSWORD: SUPERUSER_PASSWORD,
      PGFOLLOW_SQL_DIR: sqlDir,
      PGFOLLOW_SECRETS_DIR: leaderSecrets,
      PGFOLLOW_REPLICATOR: 'replicator',
      PGFOLLOW_SLOTS: SLOT,
    },
    ...(asRoot ? { uid: serverUser.uid, gid: serverUser.gid } : {}),
  })
  ctx.initMs = Date.now() - initStarted
  ctx.initOutput = `${ctx.init.stdout ?? ''}${ctx.init.stderr ?? ''}`
  await stopServer(temporary)

  // The real leader; asynchronous, so that writes made while the replica
  // is down do not wait for it.
  ctx.leader = startServer(join(BIN, 'postgres'), ['-D', ctx.leaderData, '-p', String(ctx.leaderPort), ...ctx.flags], {}, serverUser)
  await waitReady(ctx.leaderPort, ctx.leader)

  // What Docker's upload gives the replica: a root-owned secret file.
  ctx.secretsIn = join(dir, 'secrets-in')
  mkdirSync(ctx.secretsIn, { mode: 0o700 })
  writeFileSync(join(ctx.secretsIn, 'replicator_password'), REPLICATOR_PASSWORD, { mode: 0o600 })
  writeFileSync(join(ctx.secretsIn, 'postgres_password'), SUPERUSER_PASSWORD, { mode: 0o600 })
  if (!asRoot) chmodSync(ctx.secretsIn, 0o755)
  ctx.replicaData = join(dir, 'replica', 'data')
  if (!asRoot) mkdirSync(join(dir, 'replica'))
}

entrypoint.after(async () => {
  for (const server of [ctx.replica, ctx.leader]) if (server) await stopServer(server)
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true })
})

entrypoint("the leader's init script completes on the image's temporary server when synchronous replication is on", () => {
  assert.is(
    ctx.init.error?.code,
    undefined,
    `the init script did not finish within ${INIT_TIMEOUT_MS} ms: a commit waited for a standby\n${ctx.initOutput}`,
  )
  assert.is(ctx.init.status, 0, ctx.initOutput)
  assert.ok(ctx.initMs < INIT_TIMEOUT_MS, `${ctx.initMs} ms`)
  assert.is(leaderSql(`select count(*) from pg_database where datname = '${infra.DATABASE}'`), '1', 'the cluster database exists')
})

entrypoint("the leader's init script creates the replicator role and a slot that reserves WAL", () => {
  const role = leaderSql("select rolreplication, rolsuper, rolcanlogin from pg_roles where rolname = 'replicator'")
  assert.is(role, 't|f|t', ctx.initOutput)
  assert.is(leaderSql(`select slot_type, restart_lsn is not null from pg_replication_slots where slot_name = '${SLOT}'`), 'physical|t')
  assert.not.ok(ctx.initOutput.includes(REPLICATOR_PASSWORD), 'the password is not echoed')
})

entrypoint('the replicator may replicate but not log in to a database', () => {
  const login = spawnSync('psql', ['-h', '127.0.0.1', '-p', String(ctx.leaderPort), '-U', 'replicator', '-d', 'postgres', '-c', 'select 1'], {
    encoding: 'utf8',
    env: { ...process.env, PGPASSWORD: REPLICATOR_PASSWORD, PGCONNECT_TIMEOUT: '5' },
  })
  assert.is.not(login.status, 0)
  assert.match(login.stderr, /pg_hba.conf rejects connection/)
})

entrypoint('the first start clones the leader and streams as a hot standby through its own slot', async () => {
  ctx.replica = startReplica()
  await waitReady(ctx.replicaPort, ctx.replica)
  assert.match(ctx.replica.output(), /cloning the leader 127\.0\.0\.1:\d+ into .* \(slot pgfollow_replica1\)/)
  assert.is(replicaSql('select pg_is_in_recovery()'), 't')
  await eventually(() => leaderSql("select application_name || '|' || state from pg_stat_replication") === 'replica1|streaming', 'replica1 streams')
  assert.is(leaderSql(`select active from pg_replication_slots where slot_name = '${SLOT}'`), 't')
  assert.is(leaderSql('select count(*) from pg_replication_slots'), '1')
  leaderSql('create table written_on_the_leader (n int); insert into written_on_the_leader values (1)')
  await eventually(() => replicaSql('select count(*) from written_on_the_leader') === '1', 'the write reaches the replica')
  assert.not.ok(existsSync(`${ctx.replicaData}.pgfollow-clone`), 'the clone was renamed into place')
  if (asRoot) {
    // Uploaded root-only; the entrypoint copied it for postgres, 0600.
    const copied = statSync(join(ctx.replica.secretsDir, 'replicator_password'))
    assert.is(copied.uid, serverUser.uid)
    assert.is(copied.mode & 0o777, 0o600)
    assert.is(statSync(ctx.replicaData).uid, serverUser.uid, 'the clone belongs to postgres')
  }
})

entrypoint('a restart starts the same data directory without cloning and reuses the slot', async () => {
  writeFileSync(join(ctx.replicaData, 'pgfollow-test-marker'), 'same directory\n')
  const lsnBefore = leaderSql(`select restart_lsn from pg_replication_slots where slot_name = '${SLOT}'`)
  await stopServer(ctx.replica)
  // Written while the replica is down: the slot keeps the WAL for it.
  leaderSql('insert into written_on_the_leader values (2)')
  ctx.replica = startReplica()
  await waitReady(ctx.replicaPort, ctx.replica)
  const output = ctx.replica.output()
  assert.match(output, /holds a data directory; starting it without cloning/)
  assert.not.match(output, /cloning the leader/)
  assert.ok(existsSync(join(ctx.replicaData, 'pgfollow-test-marker')), 'the data directory was kept')
  await eventually(() => replicaSql('select count(*) from written_on_the_leader') === '2', 'the write made while it was down arrives')
  await eventually(() => leaderSql("select application_name || '|' || state from pg_stat_replication") === 'replica1|streaming', 'streaming again')
  assert.is(leaderSql('select count(*) from pg_replication_slots'), '1', 'no second slot')
  assert.is(leaderSql(`select active from pg_replication_slots where slot_name = '${SLOT}'`), 't')
  const lsnAfter = leaderSql(`select restart_lsn from pg_replication_slots where slot_name = '${SLOT}'`)
  assert.ok(leaderSql(`select '${lsnAfter}'::pg_lsn >= '${lsnBefore}'::pg_lsn`) === 't', 'the slot moved on, it was not recreated')
})

entrypoint('the health check calls a streaming replica healthy, and the leader healthy when it accepts connections', () => {
  const replica = healthcheck('replica', ctx.replicaPort, ctx.replica.secretsDir)
  assert.is(replica.status, 0, replica.output)
  assert.is(replica.output.trim(), 'streaming')
  const leader = healthcheck('leader', ctx.leaderPort, ctx.replica.secretsDir)
  assert.is(leader.status, 0, leader.output)
  assert.is(leader.output.trim(), 'accepting connections')
})

entrypoint('a replica whose slot the leader invalidated while it was down recreates the slot and clones again', async () => {
  writeFileSync(join(ctx.replicaData, 'pgfollow-test-marker'), 'the old copy\n')
  await stopServer(ctx.replica)
  // The replica is down past max_slot_wal_keep_size: WAL moves on, and a
  // checkpoint removes what the slot held and invalidates it.
  await restartLeader(['-c', 'max_slot_wal_keep_size=1MB'])
  for (let i = 0; i < 3; i++) leaderSql(`insert into written_on_the_leader values (${10 + i}); select pg_switch_wal()`)
  leaderSql('checkpoint')
  await eventually(() => {
    leaderSql('checkpoint')
    return leaderSql(`select wal_status from pg_replication_slots where slot_name = '${SLOT}'`) === 'lost'
  }, 'the slot is invalidated')
  leaderSql('insert into written_on_the_leader values (3)')
  await restartLeader([])

  ctx.replica = startReplica()
  await waitReady(ctx.replicaPort, ctx.replica)
  const output = ctx.replica.output()
  assert.match(output, /slot pgfollow_replica1 on the leader is invalidated: the WAL this replica needs is gone; cloning the leader again/)
  assert.match(output, /the leader invalidated slot pgfollow_replica1 \(the WAL it held is gone\); dropping it/)
  assert.not.ok(existsSync(join(ctx.replicaData, 'pgfollow-test-marker')), 'the old copy was replaced')
  assert.not.ok(existsSync(`${ctx.replicaData}.pgfollow-clone`))
  await eventually(() => leaderSql("select application_name || '|' || state from pg_stat_replication") === 'replica1|streaming', 'streaming again')
  assert.is(leaderSql(`select wal_status from pg_replication_slots where slot_name = '${SLOT}'`), 'reserved')
  assert.is(leaderSql('select count(*) from pg_replication_slots'), '1', 'no second slot')
  await eventually(() => replicaSql('select count(*) from written_on_the_leader where n = 3') === '1', 'a write made while it was down arrives')
  const health = healthcheck('replica', ctx.replicaPort, ctx.replica.secretsDir)
  assert.is(health.status, 0, health.output)
})

entrypoint('a replica that cannot reach the leader gives up with a clear message and clones nothing', async () => {
  const data = join(ctx.dir, 'unreachable', 'data')
  if (!asRoot) mkdirSync(join(ctx.dir, 'unreachable'))
  const child = startEntrypoint({ PGDATA: data, PGFOLLOW_LEADER_PORT: String(await freePort()), PGFOLLOW_WAIT_SECONDS: '2' }, [
    '-D',
    data,
    '-p',
    String(await freePort()),
  ])
  const code = await exited(child, 20_000)
  assert.is(code, 1)
  assert.match(child.output(), /did not accept connections within 2s; nothing was cloned/)
  assert.equal(existsSync(data) ? readdirSync(data) : [], [])
  assert.not.ok(existsSync(`${data}.pgfollow-clone`))
})

entrypoint('a data directory with files but no PG_VERSION is left alone', async () => {
  const parent = join(ctx.dir, 'stray')
  const data = join(parent, 'data')
  mkdirSync(data, { recursive: true })
  writeFileSync(join(data, 'somebody-elses-file'), 'keep me\n')
  if (asRoot) chownSync(parent, serverUser.uid, serverUser.gid)
  const child = startEntrypoint({ PGDATA: data }, ['-D', data, '-p', String(await freePort())])
  assert.is(await exited(child, 20_000), 1)
  assert.match(child.output(), /has files but no PG_VERSION; not cloning over them/)
  assert.ok(existsSync(join(data, 'somebody-elses-file')))
})

entrypoint('the health check says "not streaming" when a replica accepts connections but cannot stream', async () => {
  // Last: the leader goes away, as it would for an invalidated slot the
  // entrypoint could not see (or a leader that is down).
  await stopServer(ctx.leader)
  await eventually(() => healthcheck('replica', ctx.replicaPort, ctx.replica.secretsDir).status === 1, 'the health check fails')
  const health = healthcheck('replica', ctx.replicaPort, ctx.replica.secretsDir)
  assert.match(health.output, /^not streaming: the replica is (without a WAL receiver|\w+) \(docker logs shows why\)$/m)
  assert.is(replicaSql('select 1'), '1', 'the replica itself still accepts connections, which pg_isready alone would call healthy')
})

entrypoint.run()

// PostgreSQL 18 invalidates an idle slot (idle_replication_slot_timeout) but
// keeps its restart_lsn, so READ_REPLICATION_SLOT alone cannot tell. The
// Debian 15 tools cannot clone an 18 server, so this suite stops at the
// decision: the entrypoint drops and recreates an invalidated slot, and
// starts a replica whose slot is usable without touching the slot.
const pg18 = suite('replica entrypoint against a PostgreSQL 18 leader (slot checks)')
const ctx18 = {}

pg18.before(async () => {
  try {
    const { findBinaries } = await import('pgfollow/cluster')
    const bin18 = findBinaries().dir
    const dir = mkdtempSync(join(tmpdir(), 'pgfollow-entrypoint18-'))
    chmodSync(dir, 0o755)
    ctx18.dir = dir
    ctx18.port = await freePort()
    const socketDir = ownedDir(join(dir, 'sock'))
    const data = ownedDir(join(dir, 'leader'), 0o700)
    run(join(bin18, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync'], { user: serverUser })
    ctx18.leader = startServer(
      join(bin18, 'postgres'),
      [
        '-D',
        data,
        '-p',
        String(ctx18.port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${socketDir}`,
      ],
      {},
      serverUser,
    )
    await waitReady(ctx18.port, ctx18.leader)
    sql18(`create role replicator login replication; select pg_create_physical_replication_slot('${SLOT}', true)`)
    sql18("alter system set idle_replication_slot_timeout = '1s'")
    sql18('select pg_reload_conf()')
    await eventually(() => {
      sql18('checkpoint')
      return sql18(`select invalidation_reason from pg_replication_slots where slot_name = '${SLOT}'`) === 'idle_timeout'
    }, 'the idle slot is invalidated')
    sql18('alter system reset idle_replication_slot_timeout')
    sql18('select pg_reload_conf()')
    ctx18.restartLsn = sql18(`select restart_lsn from pg_replication_slots where slot_name = '${SLOT}'`)
    ctx18.secretsIn = join(dir, 'secrets-in')
    mkdirSync(ctx18.secretsIn, { mode: asRoot ? 0o700 : 0o755 })
    writeFileSync(join(ctx18.secretsIn, 'replicator_password'), REPLICATOR_PASSWORD, { mode: 0o600 })
    // A data directory the entrypoint would start as it is; PG_VERSION is all it looks at.
    const parent = ownedDir(join(dir, 'replica'))
    ctx18.data = ownedDir(join(parent, 'data'), 0o700)
    ownedFile(join(ctx18.data, 'PG_VERSION'), '18\n', 0o600)
  } catch (error) {
    console.error(error)
    process.exitCode = 1
    throw error
  }
})

pg18.after(async () => {
  if (ctx18.leader) await stopServer(ctx18.leader)
  if (ctx18.dir) rmSync(ctx18.dir, { recursive: true, force: true })
})

pg18('a slot invalidated for being idle is seen although it keeps its restart_lsn, and is dropped and recreated', async () => {
  assert.is.not(ctx18.restartLsn, '', 'PostgreSQL 18 keeps the restart_lsn of a slot invalidated for idle_timeout')
  const child = entrypoint18()
  await exited(child, 30_000)
  const output = child.output()
  assert.match(output, /slot pgfollow_replica1 on the leader is invalidated: the WAL this replica needs is gone; cloning the leader again/)
  assert.match(output, /the leader invalidated slot pgfollow_replica1 \(the WAL it held is gone\); dropping it/)
  assert.is(sql18(`select coalesce(invalidation_reason, 'valid') from pg_replication_slots where slot_name = '${SLOT}'`), 'valid', output)
  // The 15 tools cannot clone an 18 server; a clone that fails leaves the old copy in place.
  assert.ok(existsSync(join(ctx18.data, 'PG_VERSION')), 'the old copy stays until a new one is complete')
})

pg18('a usable slot passes the check untouched, and the replica starts without cloning', async () => {
  const before = sql18(`select restart_lsn from pg_replication_slots where slot_name = '${SLOT}'`)
  const child = entrypoint18()
  assert.is(await exited(child, 30_000), 0, child.output())
  assert.match(child.output(), /holds a data directory; starting it without cloning/)
  assert.match(child.output(), /pgfollow-test-started/)
  assert.is(sql18(`select restart_lsn || ' ' || active from pg_replication_slots where slot_name = '${SLOT}'`), `${before} false`)
})

pg18.run()

// --- helpers

/** The replica entrypoint against the 18 leader, with a command that only says it ran. */
function entrypoint18() {
  return startServer('sh', [entrypointPath, 'sh', '-c', 'echo pgfollow-test-started'], {
    PGDATA: ctx18.data,
    PGFOLLOW_ROLE: 'replica',
    PGFOLLOW_SECRETS_IN: ctx18.secretsIn,
    PGFOLLOW_SECRETS_DIR: join(ctx18.dir, `secrets-${++entrypointRuns}`),
    PGFOLLOW_OS_USER: serverUser.name,
    PGFOLLOW_LEADER_HOST: '127.0.0.1',
    PGFOLLOW_LEADER_PORT: String(ctx18.port),
    PGFOLLOW_SLOT: SLOT,
    PGFOLLOW_APPLICATION_NAME: 'replica1',
    PGFOLLOW_REPLICATOR: 'replicator',
    PGFOLLOW_WAIT_SECONDS: '10',
    PGFOLLOW_CHECK_SECONDS: '10',
  }, null)
}

function sql18(sql) {
  return psql(ctx18.port, sql)
}

/** Stops the leader and starts it again with its flags and `extra` (later flags win). */
async function restartLeader(extra) {
  await stopServer(ctx.leader)
  ctx.leader = startServer(join(BIN, 'postgres'), ['-D', ctx.leaderData, '-p', String(ctx.leaderPort), ...ctx.flags, ...extra], {}, serverUser)
  await waitReady(ctx.leaderPort, ctx.leader)
}

/** The container's health check, as Docker runs it (as root, with the container's environment). */
function healthcheck(role, port, secretsDir) {
  const result = spawnSync('sh', [healthcheckPath], {
    encoding: 'utf8',
    timeout: 20_000,
    env: {
      ...process.env,
      PATH: `${BIN}:${process.env.PATH}`,
      LC_ALL: 'C',
      PGFOLLOW_ROLE: role,
      PGFOLLOW_PORT: String(port),
      PGFOLLOW_SECRETS_DIR: asRoot ? secretsDir : ctx.secretsIn,
    },
  })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

function startReplica() {
  return startEntrypoint({}, ['-D', ctx.replicaData, '-p', String(ctx.replicaPort)])
}

/** The entrypoint as Docker runs it: as root when we are, with its arguments as the final command. */
function startEntrypoint(env, postgresArgs) {
  const secretsDir = join(ctx.dir, `secrets-${++entrypointRuns}`)
  const child = startServer(
    'sh',
    [entrypointPath, 'postgres', ...postgresArgs, ...ctx.flags],
    {
      PGDATA: ctx.replicaData,
      PGFOLLOW_ROLE: 'replica',
      PGFOLLOW_SECRETS_IN: ctx.secretsIn,
      PGFOLLOW_SECRETS_DIR: secretsDir,
      PGFOLLOW_OS_USER: serverUser.name,
      PGFOLLOW_LEADER_HOST: '127.0.0.1',
      PGFOLLOW_LEADER_PORT: String(ctx.leaderPort),
      PGFOLLOW_SLOT: SLOT,
      PGFOLLOW_APPLICATION_NAME: 'replica1',
      PGFOLLOW_REPLICATOR: 'replicator',
      PGFOLLOW_WAIT_SECONDS: '20',
      ...env,
    },
    null,
  )
  child.secretsDir = secretsDir
  return child
}

/** Starts a long-running process (a server, or the entrypoint that execs one) and tracks its pid. */
function startServer(command, args, env, user) {
  const child = spawn(command, args, {
    env: { ...process.env, PATH: `${BIN}:${process.env.PATH}`, LC_ALL: 'C', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(user && asRoot ? { uid: user.uid, gid: user.gid } : {}),
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  child.output = () => output
  child.exitCode_ = null
  child.on('exit', (code) => {
    child.exitCode_ = code ?? 128
    started.delete(child.pid)
  })
  started.add(child.pid)
  return child
}

async function stopServer(child) {
  if (child.exitCode_ !== null) return
  process.kill(child.pid, 'SIGINT')
  if ((await exited(child, 15_000)) === undefined) {
    process.kill(child.pid, 'SIGKILL')
    await exited(child, 5_000)
  }
}

function exited(child, timeoutMs) {
  if (child.exitCode_ !== null) return Promise.resolve(child.exitCode_)
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve(code ?? 128)
    })
  })
}

async function waitReady(port, child, timeoutMs = 30_000, host = '127.0.0.1') {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode_ !== null) throw new Error(`the server on port ${port} exited with ${child.exitCode_}:\n${child.output()}`)
    if (spawnSync(join(BIN, 'pg_isready'), ['-q', '-h', host, '-p', String(port), '-t', '1']).status === 0) return
    await sleep(200)
  }
  throw new Error(`nothing accepted connections on port ${port} within ${timeoutMs} ms:\n${child.output()}`)
}

async function eventually(check, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      if (check()) return
    } catch {
      // already gone
    }
    await sleep(100)
  }
  assert.unreachable(`${what}: not within ${timeoutMs} ms`)
}

function leaderSql(sql) {
  return psql(ctx.leaderPort, sql)
}

function replicaSql(sql) {
  return psql(ctx.replicaPort, sql)
}

function psql(port, sql) {
  return run(join(BIN, 'psql'), [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-U',
    'postgres',
    '-d',
    'postgres',
    '-XAtq',
    '-v',
    'ON_ERROR_STOP=1',
    '-c',
    sql,
  ], {
    env: { PGPASSWORD: SUPERUSER_PASSWORD, PGCONNECT_TIMEOUT: '5' },
  }).stdout.trim()
}

function run(command, args, { user, env = {} } = {}) {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, PATH: `${BIN}:${process.env.PATH}`, LC_ALL: 'C', ...env },
    ...(user && asRoot ? { uid: user.uid, gid: user.gid } : {}),
  })
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.error}):\n${result.stdout}${result.stderr}`)
  }
  return result
}

/** A directory the server user owns. */
function ownedDir(path, mode = 0o755) {
  mkdirSync(path, { recursive: true, mode })
  if (asRoot) chownSync(path, serverUser.uid, serverUser.gid)
  chmodSync(path, mode)
  return path
}

function ownedFile(path, text, mode = 0o644) {
  writeFileSync(path, text, { mode })
  if (asRoot) chownSync(path, serverUser.uid, serverUser.gid)
  chmodSync(path, mode)
  return path
}

function idOf(name) {
  const id = (flag) => spawnSync('id', [flag, name], { encoding: 'utf8' })
  const uid = id('-u')
  if (uid.status !== 0) return null
  return { name, uid: Number(uid.stdout), gid: Number(id('-g').stdout) }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
