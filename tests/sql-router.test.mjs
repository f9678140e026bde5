// @exclusive
// The router's execution path on a real cluster: it owns the queue (time
// waiting for a lane is not read time), a slow read on a live node runs
// once, the leader's own 25006 is the caller's, an error that came after
// rows never poisons the next statement, streams that wrote fail clearly,
// sql.replica never touches the leader, and the tag's footprint and
// lifetime stay those of a library.
import { spawn, spawnSync } from 'node:child_process'
import process from 'node:process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect, LeaderUnavailableError, NoReplicaError } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'

const cluster = await startCluster()
const { leader, replicas } = cluster.descriptor
const admin = postgres(leader, { max: 1, onnotice: () => {} })
await admin.unsafe(`
  create table if not exists router_marks (g int);
  create sequence if not exists router_seq;
  -- Declared STABLE, but takes a sequence value from row 501 on: a read to the classifier, a write to PostgreSQL.
  create or replace function router_lying(g int) returns int language plpgsql stable as $$
  begin
    if g > 500 then perform nextval('router_seq'); end if;
    return g;
  end $$;
`)
const replicaPorts = await Promise.all(replicas.map(async (url) => {
  const client = postgres(url, { max: 1, onnotice: () => {} })
  const [row] = await client`select inet_server_port() as port`
  await client.end()
  return row.port
}))
// Wait until the function has replayed on both replicas.
for (const url of replicas) {
  const client = postgres(url, { max: 1, onnotice: () => {} })
  for (let i = 0; i < 200; i++) {
    const [row] = await client`select count(*)::int as n from pg_proc where proname = 'router_lying'`
    if (row.n === 1) break
    await new Promise((r) => setTimeout(r, 20))
  }
  await client.end()
}

// ---
const queue = suite('the router owns the queue')

queue('many concurrent 30 ms reads on a small pool: none times out, no replica retires, the leader serves none', async () => {
  // readTimeout far below the time a read waits in line: only time on the wire counts.
  const sql = connect({ ...cluster.descriptor, postgres: { max: 2 }, readTimeout: 300 })
  const retired = []
  sql.on('retire', (detail) => retired.push(detail))
  await sql.refresh()
  const started = Date.now()
  const rows = await Promise.all(Array.from({ length: 400 }, () => sql`select pg_sleep(0.03), inet_server_port() as port`))
  const seconds = (Date.now() - started) / 1000
  const status = sql.status()
  await sql.end()
  const onLeader = rows.filter(([row]) => !replicaPorts.includes(row.port)).length
  console.log(`    400 reads × 30 ms over 2 lanes per replica: ${seconds.toFixed(1)} s, ${onLeader} on the leader, ${retired.length} retired`)
  assert.is(retired.length, 0, `retired: ${JSON.stringify(retired)}`)
  assert.is(onLeader, 0)
  assert.ok(status.every((node) => node.errors === 0), JSON.stringify(status))
})

queue('a slow read on a live replica runs once, past readTimeout', async () => {
  const sql = connect({ ...cluster.descriptor, readTimeout: 300 })
  const retired = []
  sql.on('retire', (detail) => retired.push(detail))
  await sql.refresh()
  const started = Date.now()
  const [row] = await sql`select pg_sleep(1.5), inet_server_port() as port`
  const took = Date.now() - started
  const status = sql.status()
  await sql.end()
  assert.ok(replicaPorts.includes(row.port))
  assert.ok(took < 2_800, `ran once: ${took} ms`)
  assert.is(status.reduce((sum, node) => sum + node.served, 0), 1, JSON.stringify(status))
  assert.is(status.reduce((sum, node) => sum + node.errors, 0), 0)
  assert.is(retired.length, 0)
})

queue('a replica whose connections were all closed serves reads again on new ones, and end() still ends', async () => {
  // New lanes need new connections: postgres.js 3.4.9's reserve() alone never hands one over once types are fetched.
  // Each closed connection also grows postgres.js's reconnect back-off, and end() waits for good on a connection
  // closed under a statement: three rounds make those races show.
  for (let round = 1; round <= 3; round++) {
    const sql = connect({ ...cluster.descriptor, replicas: [replicas[0]], monitorInterval: 200 })
    await sql.refresh()
    await Promise.all(Array.from({ length: 50 }, () => sql`select 1`))
    const direct = postgres(replicas[0], { max: 1, onnotice: () => {} })
    const [{ closed }] = await direct`
      select count(pg_terminate_backend(pid))::int as closed from pg_stat_activity
      where pid <> pg_backend_pid() and backend_type = 'client backend' and application_name not like 'pgfollow-%'`
    await direct.end()
    const replica = () => sql.status().find((node) => node.role === 'replica')
    const before = replica().served
    const deadline = Date.now() + 8_000
    let rows = []
    while (replica().served < before + 100 && Date.now() < deadline) rows = await Promise.all(Array.from({ length: 20 }, () => sql`select 1`))
    const after = replica()
    const ending = Date.now()
    const ended = await Promise.race([sql.end().then(() => true), new Promise((resolve) => setTimeout(resolve, 5_000, false))])
    assert.ok(closed > 0, 'the tag had connections on the replica')
    assert.is(rows.length, 20)
    assert.ok(
      after.served >= before + 100,
      `round ${round}: the replica served ${after.served - before} reads on new connections: ${JSON.stringify(after)}`,
    )
    assert.ok(ended, `round ${round}: end() had not returned after ${Date.now() - ending} ms`)
  }
})

queue('end() returns after a replica closed a connection under a read', async () => {
  // postgres.js 3.4.9 keeps a statement that failed with its connection as current, and its end() waits for it for good.
  const sql = connect({ ...cluster.descriptor, replicas: [replicas[0]] })
  await sql.refresh()
  const read = sql`select pg_sleep(30), 'router-end-probe' as probe`.catch((error) => error)
  const direct = postgres(replicas[0], { max: 1, onnotice: () => {} })
  let killed = 0
  for (let i = 0; i < 100 && killed === 0; i++) {
    ;[{ killed }] =
      await direct`select count(pg_terminate_backend(pid))::int as killed from pg_stat_activity where query like '%router-end-probe%' and pid <> pg_backend_pid()`
    if (killed === 0) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  await direct.end()
  await read
  const ended = await Promise.race([sql.end().then(() => true), new Promise((resolve) => setTimeout(resolve, 5_000, false))])
  assert.is(killed, 1)
  assert.ok(ended, 'end() returned')
})

queue('status counts transactions apart from statements', async () => {
  const sql = connect(cluster.descriptor)
  await sql.begin((tx) => tx`select 1`)
  await sql`insert into router_marks values (0)`
  const leaderStatus = sql.status().find((node) => node.role === 'leader')
  await sql.end()
  assert.is(leaderStatus.transactions, 1)
  assert.is(leaderStatus.served, 1)
})

queue.run()

// ---
const refusals = suite('25006: whose error it is')

refusals("the leader's own 25006 (a read-only transaction) is the caller's PostgresError, and writes go on", async () => {
  const sql = connect(cluster.descriptor)
  const leaders = []
  sql.on('leader', (detail) => leaders.push(detail))
  const error = await sql.unsafe('set transaction_read_only = on; insert into router_marks values (1)').catch((e) => e)
  assert.is(error.code, '25006')
  assert.not.instance(error, LeaderUnavailableError)
  await sql`insert into router_marks values (2)`
  assert.is(leaders.length, 0)
  assert.ok(sql.status().find((node) => node.role === 'leader').state === 'healthy')
  await sql.end()
})

refusals('a role with default_transaction_read_only gets its 25006 from the leader, unchanged', async () => {
  await admin.unsafe(`
    do $$ begin create role router_ro login password 'ro'; exception when duplicate_object then null; end $$;
    alter role router_ro set default_transaction_read_only = on;
    grant insert on router_marks to router_ro;
  `)
  const url = (u) => u.replace(/\/\/[^@]*@/, '//router_ro:ro@')
  const sql = connect({ leader: url(leader), replicas: replicas.map(url) })
  const error = await sql`insert into router_marks values (3)`.catch((e) => e)
  await sql.end()
  assert.is(error.code, '25006', String(error))
})

refusals('an error after 500 rows on a replica: right rows from the leader, and the replica connection is clean after', async () => {
  const sql = connect({ ...cluster.descriptor, inFlight: 1 })
  await sql.refresh()
  const rows = await sql`select g, router_lying(g) from generate_series(1, 1000) g`
  assert.is(rows.length, 1000)
  assert.is(rows.filter((row) => row.g === undefined).length, 0)
  // One lane per replica: the lane that saw the error serves one of the next reads.
  for (let i = 0; i < 6; i++) {
    const next = await sql`select ${i}::int as i, inet_server_port() as port`
    assert.is(next.length, 1, `read ${i} on ${next[0]?.port} returned ${next.length} rows`)
    assert.is(next[0].i, i)
  }
  await sql.end()
})

refusals('a stream that delivered rows then met 25006 fails clearly, and the next run goes to the leader', async () => {
  const sql = connect(cluster.descriptor)
  await sql.refresh()
  let seen = 0
  const error = await sql`select g, router_lying(g) from generate_series(1, 1000) g`.forEach(() => seen++).catch((e) => e)
  assert.is(error.pgfollowCode, 'PGFOLLOW_WRITE_ON_REPLICA', String(error))
  assert.match(error.message, /sql\.leader/)
  assert.ok(seen > 0 && seen <= 500, `rows seen before the error: ${seen}`)
  let again = 0
  await sql`select g, router_lying(g) from generate_series(1, 1000) g`.forEach(() => again++)
  assert.is(again, 1000)
  await sql.end()
})

refusals('a cursor refused before any row reached the caller is retried on the leader', async () => {
  const sql = connect(cluster.descriptor)
  await sql.refresh()
  const batches = []
  for await (const batch of sql`select nextval('router_seq') as n, inet_server_port() as port`.cursor(10)) batches.push(batch)
  assert.is(batches.length, 1)
  assert.not.ok(replicaPorts.includes(batches[0][0].port))
  await sql.end()
})

refusals.run()

// ---
const strict = suite('sql.replica with fallback: false never touches the leader')

strict('a write on sql.replica is refused with a clear error, and nothing runs on the leader', async () => {
  const sql = connect({ ...cluster.descriptor, fallback: false })
  await sql.refresh()
  const [before] = await admin`select count(*)::int as n from router_marks`
  const insert = await sql.replica`insert into router_marks values (9)`.catch((e) => e)
  const writer = await sql.replica`select nextval('router_seq')`.catch((e) => e)
  const [after] = await admin`select count(*)::int as n from router_marks`
  const leaderServed = sql.status().find((node) => node.role === 'leader').served
  await sql.end()
  assert.is(insert.pgfollowCode, 'PGFOLLOW_WRITE_ON_REPLICA', String(insert))
  assert.is(writer.pgfollowCode, 'PGFOLLOW_WRITE_ON_REPLICA', String(writer))
  assert.is(after.n, before.n)
  assert.is(leaderServed, 0)
})

strict("a session's sql.replica read that no replica caught up with waits sessionWait, then NoReplicaError", async () => {
  const sql = connect({ ...cluster.descriptor, fallback: false, sessionWait: 200 })
  await sql.refresh()
  const paused = replicas.map((url) => postgres(url, { max: 1, onnotice: () => {} }))
  await Promise.all(paused.map((client) => client`select pg_wal_replay_pause()`))
  try {
    const session = sql.session()
    await session`insert into router_marks values (10)`
    const started = Date.now()
    const error = await session.replica`select count(*) from router_marks`.catch((e) => e)
    const waited = Date.now() - started
    assert.instance(error, NoReplicaError)
    assert.ok(waited >= 150, `waited ${waited} ms`)
    assert.is(sql.status().find((node) => node.role === 'leader').served, 1)
  } finally {
    await Promise.all(paused.map((client) => client`select pg_wal_replay_resume()`))
    await Promise.all(paused.map((client) => client.end()))
    await sql.end()
  }
})

strict.run()

// ---
const lifetime = suite('footprint and lifetime')

function runChild(code) {
  const started = Date.now()
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: new URL('..', import.meta.url).pathname,
    env: { ...process.env, LEADER: leader, REPLICAS: JSON.stringify(replicas) },
    encoding: 'utf8',
    timeout: 20_000,
  })
  return { ...result, ms: Date.now() - started }
}

lifetime('a connect() never used does not keep the process alive', () => {
  const child = runChild(`
    import { connect } from 'pgfollow'
    const sql = connect({ leader: process.env.LEADER, replicas: JSON.parse(process.env.REPLICAS) })
    await new Promise((resolve) => setTimeout(resolve, 300)).then(() => sql.status())
  `)
  assert.is(child.status, 0, child.stderr)
  assert.ok(child.ms < 5_000, `exited after ${child.ms} ms`)
})

lifetime('end({ timeout: 0 }) right after statements leaves no unhandled rejection', () => {
  const child = runChild(`
    import { connect } from 'pgfollow'
    const sql = connect({ leader: process.env.LEADER, replicas: JSON.parse(process.env.REPLICAS) })
    const reads = Array.from({ length: 20 }, () => sql\`select 1\`.catch(() => {}))
    await new Promise((r) => setTimeout(r, 5))
    await sql.end({ timeout: 0 })
    await Promise.all(reads)
    await new Promise((r) => setTimeout(r, 300))
  `)
  assert.is(child.status, 0, child.stderr)
})

lifetime('200 connect() without end() hold one monitor connection per node', async () => {
  const tags = Array.from({ length: 200 }, () => connect(cluster.descriptor))
  try {
    await Promise.all(tags.map((sql) => sql.refresh()))
    const [row] = await admin`select count(*)::int as n from pg_stat_activity where application_name = 'pgfollow-monitor'`
    assert.ok(row.n <= 1, `${row.n} monitor connections on the leader`)
  } finally {
    await Promise.all(tags.map((sql) => sql.end({ timeout: 1 })))
  }
})

lifetime.run()

// ---
const failover = suite('a failover under load never crashes the process')

failover(
  'SIGKILL of the leader, then failover.mjs, under reads, writes and transactions: the app lives on (no uncaughtException handler)',
  async () => {
    const child = spawn(process.execPath, [
      '--input-type=module',
      '-e',
      `
    import { connect } from 'pgfollow'
    const sql = connect({ leader: process.env.LEADER, replicas: JSON.parse(process.env.REPLICAS), monitorInterval: 100, connectTimeout: 500, ban: { base: 100, max: 500 } })
    const counts = { reads: 0, readErrors: 0, writes: 0, writeErrors: 0, transactions: 0, transactionErrors: 0 }
    let running = true
    const loop = (fn, ok, failed) => (async () => { while (running) { try { await fn(); counts[ok]++ } catch { counts[failed]++; await new Promise((r) => setTimeout(r, 5)) } } })()
    const loops = [
      ...Array.from({ length: 20 }, () => loop(() => sql\`select count(*) from router_marks\`, 'reads', 'readErrors')),
      ...Array.from({ length: 4 }, () => loop(() => sql\`insert into router_marks values (100)\`, 'writes', 'writeErrors')),
      ...Array.from({ length: 2 }, () => loop(() => sql.begin((tx) => Promise.all([tx\`insert into router_marks values (101)\`, tx\`select pg_sleep(0.005)\`, tx\`insert into router_marks values (102)\`])), 'transactions', 'transactionErrors')),
    ]
    process.stdin.once('data', async () => {
        process.stdin.destroy()
      running = false
      await Promise.all(loops)
      await sql.end({ timeout: 1 })
      console.log(JSON.stringify(counts))
        // Exits on its own: what is checked here is that nothing crashed it before (see the report on sockets left after end()).
        process.exit(0)
    })
  `,
    ], {
      cwd: new URL('..', import.meta.url).pathname,
      env: { ...process.env, LEADER: leader, REPLICAS: JSON.stringify(replicas) },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)))
    await new Promise((r) => setTimeout(r, 1500))
    cluster.kill('leader')
    await new Promise((r) => setTimeout(r, 1000))
    const promote = spawnSync(process.execPath, ['scripts/failover.mjs', '--dir', cluster.dir, '--json'], {
      cwd: new URL('..', import.meta.url).pathname,
      encoding: 'utf8',
      env: { ...process.env, FORCE_COLOR: '0' },
      timeout: 60_000,
    })
    assert.is(promote.status, 0, promote.stderr)
    await new Promise((r) => setTimeout(r, 2000))
    child.stdin.write('stop\n')
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    const code = await exited
    clearTimeout(timer)
    assert.is(code, 0, `the app died or hung (code ${code}): ${stderr.slice(-1500)} ${stdout.slice(-500)}`)
    const counts = JSON.parse(stdout.trim().split('\n').at(-1))
    console.log(`    failover under load: ${JSON.stringify(counts)}`)
    assert.ok(counts.reads > 0 && counts.writes > 0, JSON.stringify(counts))
  },
)

failover.run()

// ---
const done = suite('cleanup')
done('stops the cluster', async () => {
  await admin.end()
  await cluster.stop()
})
done.run()
