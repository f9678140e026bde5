// @exclusive
// Bad input on a real cluster: malformed descriptors and options, wrong
// passwords, a leader URL that points at a replica, duplicate URLs, SQL
// injection through values and identifiers, and a result far bigger than
// memory should hold, read through a cursor.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { ConfigError, connect, LeaderUnavailableError, parseLsn } from 'pgfollow'
import { waitForReplay } from 'pgfollow/ops'
import { startCluster } from './helpers/cluster.mjs'
import { describeErrors, loops, mb, measured, ms } from './helpers/faults.mjs'
import { sleep, within } from './helpers/wait.mjs'

const cluster = await startCluster()
const { leader: leaderUrl, replicas: replicaUrls } = cluster.descriptor
const [leaderPort, replica1Port, replica2Port] = cluster.ports
const password = cluster.state().password
const leader = postgres(leaderUrl, { max: 2, onnotice: () => {} })
const FAST = { monitorInterval: 200, connectTimeout: 2000 }

/** The same URL with another password. */
function withPassword(url, newPassword) {
  const parsed = new URL(url)
  parsed.password = newPassword
  return parsed.toString()
}

/** Runs fn, expects it to throw an instance of `type`, returns the error. */
function throws(fn, type, what) {
  try {
    fn()
  } catch (error) {
    assert.instance(error, type, `${what}: ${error?.name} ${error?.message}`)
    return error
  }
  assert.unreachable(`${what}: no error`)
}

async function rejects(promise, type, what) {
  try {
    await promise
  } catch (error) {
    assert.instance(error, type, `${what}: ${error?.name} ${error?.code} ${error?.message}`)
    return error
  }
  assert.unreachable(`${what}: no error`)
}

/** The last replay position of the leader has reached every replica. */
async function replicated() {
  const [{ lsn }] = await leader`select pg_current_wal_lsn()::text as lsn`
  await waitForReplay(replicaUrls, parseLsn(lsn), 10_000)
}

// ---

const descriptors = suite('malformed descriptors and options')

const scratch = mkdtempSync(join(tmpdir(), 'pgfollow-bad-input-'))
descriptors.after(() => rmSync(scratch, { recursive: true, force: true }))

descriptors('a descriptor file that is missing, not JSON or the wrong shape is a ConfigError that names the file', () => {
  const missing = join(scratch, 'missing.json')
  const error = throws(() => connect(missing), ConfigError, 'missing file')
  assert.ok(error.message.includes(missing), error.message)
  assert.ok(error.message.includes('cluster.mjs up'), 'says how to get one')

  const files = {
    'not-json.json': '{"leader": "postgres://postgres:' + password + '@127.0.0.1:1/db",',
    'array.json': '[]',
    'no-leader.json': '{"replicas": []}',
    'number-leader.json': '{"leader": 5432}',
    'http-leader.json': JSON.stringify({ leader: 'http://u:' + password + '@127.0.0.1:5432/db' }),
    'no-host.json': JSON.stringify({ leader: 'postgres:///db' }),
    'replicas-string.json': JSON.stringify({ leader: leaderUrl, replicas: replicaUrls[0] }),
    'replicas-number.json': JSON.stringify({ leader: leaderUrl, replicas: [42] }),
    'replica-not-url.json': JSON.stringify({ leader: leaderUrl, replicas: ['postgres://u:' + password + '@[bad'] }),
  }
  for (const [name, text] of Object.entries(files)) {
    const file = join(scratch, name)
    writeFileSync(file, text, { mode: 0o600 })
    const failure = throws(() => connect(file), ConfigError, name)
    assert.ok(failure.message.includes(file), `${name}: the message names the file: ${failure.message}`)
    assert.not.ok(failure.message.includes(password), `${name}: the message does not quote the password: ${failure.message}`)
  }
})

descriptors('bad options are ConfigErrors that name the option, before any connection is made', () => {
  const base = { leader: leaderUrl, replicas: replicaUrls }
  const cases = [
    [{ ...base, balance: 'fastest' }, 'balance'],
    [{ ...base, weights: [1] }, 'weights'],
    [{ ...base, weights: [1, -1] }, 'weights'],
    [{ ...base, maxLag: { ms: -5 } }, 'maxLag.ms'],
    [{ ...base, maxLag: { bytes: Number.NaN } }, 'maxLag.bytes'],
    [{ ...base, monitorInterval: 0 }, 'monitorInterval'],
    [{ ...base, connectTimeout: '2000' }, 'connectTimeout'],
    [{ ...base, readTimeout: -1 }, 'readTimeout'],
    [{ ...base, ban: { base: 0 } }, 'ban.base'],
    [{ ...base, cluster: 'x.json' }, 'cluster'],
    [{ leader: 'postgres://u:' + password + '@127.0.0.1:1/db', replicas: 'postgres://127.0.0.1:2/db' }, 'replicas'],
  ]
  for (const [options, name] of cases) {
    const error = throws(() => connect(options), ConfigError, name)
    assert.ok(error.message.includes(name), `the message names ${name}: ${error.message}`)
    assert.not.ok(error.message.includes(password), `no password in: ${error.message}`)
  }
  const sql = connect({ ...base, ...FAST })
  throws(() => sql.session({ after: "0/0'; drop table blogs; --" }), ConfigError, 'a forged session token')
  return sql.end({ timeout: 1 })
})

descriptors('duplicate URLs are refused, with the password redacted', () => {
  const [replica1] = replicaUrls
  const aliases = [
    [{ leader: leaderUrl, replicas: [replica1, replica1] }, 'a replica twice'],
    [{ leader: leaderUrl, replicas: [leaderUrl, replica1] }, 'the leader among the replicas'],
    [{ leader: leaderUrl, replicas: [replica1, replica1.replace('postgres://', 'postgresql://')] }, 'postgres:// and postgresql://'],
    [{ leader: leaderUrl, replicas: [replica1, withPassword(replica1, 'other-password')] }, 'the same node with another password'],
    [{ leader: leaderUrl, replicas: [replica1, replica1 + '?application_name=x'] }, 'the same node with query parameters'],
  ]
  for (const [options, what] of aliases) {
    const error = throws(() => connect(options), ConfigError, what)
    assert.ok(/twice/.test(error.message), `${what}: ${error.message}`)
    assert.not.ok(error.message.includes(password), `${what}: no password in ${error.message}`)
    assert.ok(error.message.includes('***'), `${what}: the URL is shown redacted: ${error.message}`)
  }
})

descriptors.run()

// ---

const logins = suite('wrong passwords and wrong roles')

logins('a replica with a wrong password is banned and its reads go elsewhere, without an error', async () => {
  const sql = connect({ leader: leaderUrl, replicas: [withPassword(replicaUrls[0], 'wrong-' + password), replicaUrls[1]], ...FAST })
  const readers = loops(10, () => sql`select inet_server_port() as port`, { maxMs: 5000 })
  try {
    await sleep(1000)
    await readers.stop()
    // A node that never answered has not said its cluster_name: it is named host:port.
    const [bad] = sql.status().filter((node) => node.name === `127.0.0.1:${replica1Port}`)
    const servedBy = (port) => readers.samples.filter((s) => s.value[0].port === port).length
    measured(
      `wrong replica password: ${readers.errors.length} errors / ${readers.samples.length} reads ` +
        `(${servedBy(replica2Port)} on replica2, ${servedBy(leaderPort)} on the leader); replica1 ${bad.state}: ${bad.lastError}`,
    )
    assert.equal(describeErrors(readers.errors), [])
    assert.ok(['banned', 'down'].includes(bad.state), bad.state)
    assert.ok(/password authentication failed/.test(bad.lastError), bad.lastError)
    assert.not.ok(JSON.stringify(sql.status()).includes(password), 'no password in the status')
    assert.is(servedBy(replica1Port), 0, 'no read came from the replica that cannot log in')
    assert.ok(servedBy(replica2Port) > readers.samples.length / 2, 'the good replica served the reads')
  } finally {
    await readers.stop()
    await sql.end({ timeout: 1 })
  }
})

logins('a leader with a wrong password: writes fail at once with a ConfigError that says to fix the password', async () => {
  const wrong = 'wrong-' + password
  const sql = connect({ leader: withPassword(leaderUrl, wrong), replicas: replicaUrls, ...FAST })
  try {
    const started = performance.now()
    const error = await rejects(sql`insert into blogs (url) values ('never')`, ConfigError, 'a write with a wrong leader password')
    const took = performance.now() - started
    measured(`wrong leader password: write refused in ${ms(took)} with ${error.name}: ${error.message}`)
    assert.ok(/password/.test(error.message), error.message)
    assert.not.ok(error.message.includes(wrong), 'the wrong password is not quoted')
    assert.not.ok(error.message.includes(password), 'nor the right one')
    assert.ok(took < 2000, `refused within ${ms(took)}`)
    // Reads do not need the leader.
    const [row] = await sql`select inet_server_port() as port`
    assert.ok([replica1Port, replica2Port].includes(row.port))
  } finally {
    await sql.end({ timeout: 1 })
  }
})

logins('a wrong leader password is still reported as a login problem once the leader is banned for it', async () => {
  const wrong = 'wrong-again-' + password
  const sql = connect({ leader: withPassword(leaderUrl, wrong), replicas: replicaUrls, ...FAST })
  try {
    await rejects(sql`insert into blogs (url) values ('never')`, ConfigError, 'the first write')
    // KNOWN LIB BUG (kept failing on purpose): the failed login banned the
    // leader, and lib/router.ts #runOnLeader then answers every write with
    // LeaderUnavailableError "does not answer ... Promote a replica", which
    // sends the user to failover instead of to the password.
    const second = await sql`insert into blogs (url) values ('never')`.then(() => null, (error) => error)
    assert.ok(second, 'the second write failed too')
    assert.not.ok(second.message.includes(wrong), 'no password in the message')
    measured(`wrong leader password, second write: ${second.name}: ${second.message}`)
    assert.instance(second, ConfigError, `the second write should still say to fix the password, got ${second.name}: ${second.message}`)
  } finally {
    await sql.end({ timeout: 1 })
  }
})

logins('every password wrong: a read fails fast and the error says to check the logins', async () => {
  const wrong = 'all-wrong-' + password
  const sql = connect({ leader: withPassword(leaderUrl, wrong), replicas: replicaUrls.map((url) => withPassword(url, wrong)), ...FAST })
  try {
    const started = performance.now()
    let error
    try {
      await within(sql`select 1`, 5000, 'a read with every password wrong')
    } catch (caught) {
      error = caught
    }
    const took = performance.now() - started
    assert.ok(error, 'the read failed')
    const text = `${error.name} ${error.message} ${JSON.stringify(sql.status().map((n) => n.lastError))}`
    measured(`every password wrong: read refused in ${ms(took)} with ${error.name}: ${error.message}`)
    assert.ok(took < 3000, `failed within ${ms(took)}`)
    assert.not.ok(text.includes(wrong), 'no password in the error or the status')
    // KNOWN LIB BUG (kept failing on purpose): lib/router.ts retries a read
    // refused with 28P01 on every node, then reports LeaderUnavailableError
    // "the leader does not answer" - the leader did answer, it refused the
    // login. A write in the same situation gets the right ConfigError.
    assert.ok(
      /password|login/i.test(error.message),
      `the error itself should say the logins were refused (as a write's ConfigError does), not that the leader "does not answer": ${error.name}: ${error.message}`,
    )
  } finally {
    await sql.end({ timeout: 1 })
  }
})

logins('a leader URL that points at a replica: writes find the real leader when it is listed', async () => {
  const warnings = []
  const sql = connect({ leader: replicaUrls[0], replicas: [leaderUrl, replicaUrls[1]], ...FAST })
  sql.on('warning', (w) => warnings.push(w.message))
  sql.on('leader', (w) => warnings.push(`leader moved to ${w.name}`))
  try {
    const [row] = await sql`insert into blogs (url) values ('leader found') returning inet_server_port() as port`
    assert.is(row.port, leaderPort, 'the write ran on the real leader')
    const roles = Object.fromEntries(sql.status().map((node) => [node.name, node.role]))
    assert.equal(
      roles,
      { replica1: 'replica', leader: 'leader', replica2: 'replica' },
      'status names nodes by cluster_name and gives the real leader its role (the descriptor listed it as a replica)',
    )
    for (let i = 0; i < 6; i++) {
      const [read] = await sql`select inet_server_port() as port`
      assert.not.equal(read.port, leaderPort, 'reads stay on replicas')
    }
    measured(
      `leader URL pointing at a replica (real leader listed as a replica): write moved to the real leader; events: ${warnings.join(' | ') || 'none'}`,
    )
  } finally {
    await sql.end({ timeout: 1 })
  }
})

logins('a leader URL that points at a replica: with no real leader listed, writes fail fast with LeaderUnavailableError', async () => {
  const sql = connect({ leader: replicaUrls[0], replicas: [replicaUrls[1]], ...FAST })
  try {
    const started = performance.now()
    const error = await rejects(sql`insert into blogs (url) values ('nowhere')`, LeaderUnavailableError, 'a write without a leader')
    const took = performance.now() - started
    assert.ok(/recovery/.test(error.message), `the message says the "leader" is in recovery: ${error.message}`)
    assert.ok(took < 2000, `refused within ${ms(took)}`)
    await rejects(sql.begin((tx) => tx`insert into blogs (url) values ('nowhere')`), LeaderUnavailableError, 'a transaction without a leader')
    const [row] = await sql`select count(*)::int as n from blogs`
    assert.ok(row.n >= 0, 'reads still work')
    measured(`leader URL pointing at a replica, no leader listed: write refused in ${ms(took)} (${error.name})`)
  } finally {
    await sql.end({ timeout: 1 })
  }
})

logins.run()

// ---

const injection = suite('SQL injection')

const sql = connect({ leader: leaderUrl, replicas: replicaUrls, ...FAST })
const HOSTILE = [
  "'; drop table blogs; --",
  "' or '1'='1",
  '"; delete from posts; --',
  '$1); drop table blogs; --',
  "\\'; select pg_sleep(10); --",
  "Robert'); drop table blogs;--",
  "e'\\x27; drop table blogs; --",
  '/* */ union select usename, passwd from pg_shadow --',
]

async function tablesIntact() {
  const [row] = await leader`select count(*)::int as n from pg_tables where tablename in ('blogs', 'posts', 'comments')`
  assert.is(row.n, 3, 'blogs, posts and comments still exist')
}

injection('hostile values round-trip as data: through the tag, sql(row), sql.unsafe with parameters, reads and writes', async () => {
  const session = sql.session()
  for (const value of HOSTILE) {
    const [echo] = await sql`select ${value}::text as v, inet_server_port() as port`
    assert.is(echo.v, value)
    assert.ok([replica1Port, replica2Port].includes(echo.port), 'a value cannot turn a read into something else: it still ran on a replica')
    const [unsafe] = await sql.unsafe('select $1::text as v', [value])
    assert.is(unsafe.v, value)
    const [inserted] = await session`insert into blogs ${sql({ url: value })} returning id`
    const [read] = await session`select url from blogs where id = ${inserted.id} and url = ${value}`
    assert.is(read?.url, value, 'read back unchanged (read-your-writes on a replica)')
    const found = await session`select count(*)::int as n from blogs where url in ${sql([value, 'x'])}`
    assert.is(found[0].n, 1)
  }
  await tablesIntact()
})

injection('hostile identifiers are quoted: sql(name) never runs what the name contains', async () => {
  for (const name of ['blogs; drop table posts; --', 'blogs" ; drop table posts; --', 'x"y']) {
    const error = await sql`select * from ${sql(name)}`.then(
      () => null,
      (caught) => caught,
    )
    assert.is(error?.code, '42P01', `no table named ${name}: ${error?.message}`)
  }
  const weird = 'we"ird; drop table blogs; --'
  await sql`create table ${sql(weird)} (${sql('co"l; --')} text)`
  await sql`insert into ${sql(weird)} ${sql({ 'co"l; --': 'kept' })}`
  const [table] = await leader`select relname from pg_class where relname = ${weird}`
  assert.is(table?.relname, weird, 'the table carries the whole hostile name, quotes included')
  const [row] = await sql.leader`select ${sql('co"l; --')} as v from ${sql(weird)} order by ${sql('co"l; --')}`
  assert.is(row.v, 'kept')
  const column = await sql`insert into blogs ${sql({ 'url) values (1); drop table posts; --': 'x' })}`.then(
    () => null,
    (caught) => caught,
  )
  assert.is(column?.code, '42703', `a hostile column name is an unknown column: ${column?.message}`)
  await sql`drop table ${sql(weird)}`
  await tablesIntact()
})

injection.run()

// ---

const cursor = suite('a huge result through a cursor')

cursor.after(async () => {
  await sql.end({ timeout: 1 })
  await leader.end({ timeout: 1 })
  await cluster.stop()
})

cursor('a result far bigger than the heap streams through .cursor() in bounded memory', async () => {
  const ROWS = 150_000
  const HEAP_CAP_MB = 32 // the child's old space; its young space is capped at 2 MB too
  const created = performance.now()
  await leader`create table big_result as select g as id, repeat(md5(g::text), 32) as pad from generate_series(1, ${ROWS}) g`
  await replicated()
  const createdMs = performance.now() - created
  const [{ bytes }] = await leader`select pg_total_relation_size('big_result')::bigint as bytes`
  const tableBytes = Number(bytes)

  const child = await readInChild(
    [`--max-old-space-size=${HEAP_CAP_MB}`, '--max-semi-space-size=2', fileURLToPath(new URL('./helpers/cursor-reader.mjs', import.meta.url))],
    JSON.stringify({ descriptor: cluster.descriptor, table: 'big_result', batch: 1000 }),
    60_000,
  )
  assert.is(child.code, 0, `the reader (heap capped at ${HEAP_CAP_MB} MB) finished: ${child.stderr.slice(-500)}`)
  const result = JSON.parse(child.stdout.trim().split('\n').pop())
  const rssGrowth = result.peakRss - result.startRss
  const heapGrowth = result.peakHeap - result.startHeap
  measured(
    `cursor(1000) over ${ROWS} rows (${mb(tableBytes)} table, ${mb(result.payload)} payload) from a replica in ${ms(result.ms)}, ` +
      `in a process with a ${HEAP_CAP_MB} MB heap cap: peak RSS +${mb(rssGrowth)}, peak heap +${mb(heapGrowth)} (table created and replicated in ${
        ms(createdMs)
      })`,
  )
  assert.is(result.rows, ROWS, 'every row arrived')
  assert.ok(result.ordered, 'in order, each once')
  assert.ok(result.ports.every((port) => [replica1Port, replica2Port].includes(port)), 'read from a replica')
  assert.ok(tableBytes > 3 * HEAP_CAP_MB * 1024 * 1024, `the table (${mb(tableBytes)}) is much bigger than the heap cap`)
  assert.ok(rssGrowth < tableBytes / 2, `RSS grew ${mb(rssGrowth)}, well below the ${mb(tableBytes)} table`)
  assert.ok(heapGrowth < tableBytes / 4, `heap grew ${mb(heapGrowth)}, well below the ${mb(tableBytes)} table`)

  // The control: the same read into one array, under the same cap, runs out of memory.
  const control = await readInChild(
    [`--max-old-space-size=${HEAP_CAP_MB}`, '--max-semi-space-size=2', fileURLToPath(new URL('./helpers/cursor-reader.mjs', import.meta.url))],
    JSON.stringify({ descriptor: cluster.descriptor, table: 'big_result', mode: 'all' }),
    60_000,
  )
  measured(
    `the same rows read into one array under the same cap: ended by ${control.signal ?? `exit code ${control.code}`}${
      /heap out of memory/i.test(control.stderr) ? ', heap out of memory' : ''
    }`,
  )
  assert.not.equal(control.code, 0, 'without a cursor the capped reader cannot hold the result: the cap is real')
  await leader`drop table big_result`
})

/** Runs node with `args`, feeds it `input`, and collects its output; killed after `timeoutMs`. */
function readInChild(args, input, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
    child.stdin.end(input)
  })
}

cursor.run()
