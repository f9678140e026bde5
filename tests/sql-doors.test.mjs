// Every door of postgres.js's API, through the tag, on a real cluster whose
// replica lags on purpose (recovery_min_apply_delay): options and parsers
// reach every node's pool, sessions see writes made through streams, COPY,
// files and reserved connections, reserved connections route, and errors
// keep postgres.js's codes and the caller's stack.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { Kysely, sql as kyselySql } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { freePort } from 'pgfollow/cluster'
import { startCluster } from './helpers/cluster.mjs'
import { until } from './helpers/wait.mjs'

const cluster = await startCluster({ replicas: 1, migrate: false })
const [leaderPort, replicaPort] = cluster.ports
const admin = postgres(cluster.descriptor.leader, { max: 1, onnotice: () => {} })
const replicaAdmin = postgres(cluster.descriptor.replicas[0], { max: 1, onnotice: () => {} })
await admin`create table doors (id serial primary key, tag text not null, at timestamptz default now(), doc jsonb)`

const debugged = []
const notices = []
const sql = connect({
  ...cluster.descriptor,
  monitorInterval: 100,
  postgres: { onnotice: (notice) => notices.push(notice.message), debug: (_, text) => debugged.push(text) },
})

async function setApplyDelay(delay) {
  await replicaAdmin.unsafe(`alter system set recovery_min_apply_delay = '${delay}'`)
  await replicaAdmin`select pg_reload_conf()`
}

/** Waits until the replica has replayed everything the leader has, and the tag knows it is healthy. */
async function caughtUp() {
  const [{ lsn }] = await admin`select pg_current_wal_insert_lsn()::text as lsn`
  await until(async () => (await replicaAdmin`select pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn as ok`)[0].ok, 10_000, 'replay')
  await sql.refresh()
}

let counter = 0
const tagged = (name) => `${name}-${++counter}`
const countOf = (tag, via) => via`select count(*)::int as n from doors where tag = ${tag}`.then(([row]) => row.n)

// ---------------------------------------------------------------------------
const options = suite('options reach every node')

options.before(async () => {
  await setApplyDelay('0')
  await caughtUp()
})

options('parsers and serializers set on sql.options after connect() apply on the replica too (as Drizzle sets them)', async () => {
  // Drizzle hands jsonb over already encoded, with a pass-through serializer: encoded twice, the replica would compare a string.
  sql.options.serializers[3802] = (x) => x
  sql.options.parsers[1184] = (x) => `raw:${x}`
  try {
    for (const [via, port] of [[sql.leader, leaderPort], [sql.replica, replicaPort]]) {
      const [row] = await via`select ${sql.typed('{"a":1}', 3802)}::jsonb = '{"a":1}'::jsonb as same, now() as at, inet_server_port() as port`
      assert.is(row.port, port, 'served by the node it was pinned to')
      assert.ok(row.same, `jsonb compared equal on ${row.port}`)
      assert.ok(String(row.at).startsWith('raw:'), `timestamptz parsed by the user's parser on ${row.port}: ${row.at}`)
    }
  } finally {
    delete sql.options.parsers[1184]
    sql.options.serializers[3802] = (x) => JSON.stringify(x)
  }
})

options("onnotice and debug are the user's on every node; internal statements never reach debug", async () => {
  notices.length = 0
  await sql.leader.unsafe(`do $$ begin raise notice 'from the leader'; end $$`)
  await sql.replica.unsafe(`do $$ begin raise notice 'from a replica'; end $$`)
  assert.equal(notices.sort(), ['from a replica', 'from the leader'])

  debugged.length = 0
  const s = sql.session()
  const tag = tagged('debug')
  await s`insert into doors (tag) values (${tag})`
  for await (const _ of s`select * from doors where tag = ${tag}`.cursor(1));
  await s`select count(*) from doors where tag = ${tag}`
  assert.ok(debugged.some((text) => text.startsWith('insert into doors')), 'the user statement was seen')
  assert.not.ok(debugged.some((text) => /pg_current_wal_insert_lsn|pg_last_wal_replay_lsn/.test(text)), `internal statements leaked: ${debugged}`)
})

options('a transform and a debug hook set later apply on the replica', async () => {
  const camel = connect({ ...cluster.descriptor, postgres: { transform: postgres.camel, onnotice: () => {} } })
  try {
    const [row] = await camel.replica`select inet_server_port() as server_port`
    assert.is(row.serverPort, replicaPort)
    const seen = []
    camel.options.debug = (_, text) => seen.push(text)
    await camel.replica`select 'later' as late_value`
    await camel.leader`select 'later' as late_value`
    assert.is(seen.filter((text) => text.includes('later')).length, 2, `debug set later saw ${seen}`)
  } finally {
    await camel.end()
  }
})

options("the user's connect_timeout wins over connectTimeout's default", async () => {
  const patient = connect({ ...cluster.descriptor, postgres: { connect_timeout: 7 } })
  assert.is(patient.options.connect_timeout, 7)
  await patient.end()
})

options.run()

// ---------------------------------------------------------------------------
const sessions = suite('sessions see writes through every door (replica 1.5 s behind)')

sessions.before(async () => {
  await setApplyDelay('1500ms')
  // The reload reaches the replica's startup process a moment later: wait until a fresh write stays off it.
  await until(
    async () => {
      const tag = tagged('probe')
      await admin`insert into doors (tag) values (${tag})`
      await new Promise((r) => setTimeout(r, 100))
      return (await countOf(tag, replicaAdmin)) === 0
    },
    5000,
    'the apply delay to hold',
  )
})

sessions('a plain read right after a write misses it (the replica really lags)', async () => {
  const tag = tagged('plain')
  await sql`insert into doors (tag) values (${tag})`
  assert.is(await countOf(tag, sql.replica), 0)
})

const writeDoors = {
  '.values()': (s, tag) => s`insert into doors (tag) values (${tag}) returning id`.values(),
  '.raw()': (s, tag) => s`insert into doors (tag) values (${tag}) returning id`.raw(),
  '.simple()': (s, tag) => s`insert into doors (tag) values (${s.unsafe(`'${tag}'`)})`.simple(),
  '.execute()': (s, tag) => s`insert into doors (tag) values (${tag})`.execute(),
  'unsafe()': (s, tag) => s.unsafe(`insert into doors (tag) values ('${tag}')`),
  '.forEach()': (s, tag) => s`insert into doors (tag) values (${tag}) returning id`.forEach(() => {}),
  '.cursor() with a callback': (s, tag) => s`insert into doors (tag) values (${tag}) returning id`.cursor(1, () => {}),
  '.cursor() iterated': async (s, tag) => {
    for await (const _ of s`insert into doors (tag) values (${tag}) returning id`.cursor(1));
  },
  'file(path, options)': (s, tag) => {
    const path = join(cluster.dir, `${tag}.sql`)
    writeFileSync(path, `insert into doors (tag) values ('${tag}')`)
    return s.file(path, { cache: false })
  },
  'file(path, args)': (s, tag) => {
    const path = join(cluster.dir, `${tag}-args.sql`)
    writeFileSync(path, 'insert into doors (tag) values ($1)')
    return s.file(path, [tag])
  },
  'reserve()': async (s, tag) => {
    const reserved = await s.reserve()
    await reserved`insert into doors (tag) values (${tag})`
    reserved.release()
  },
  'reserve() in a transaction': async (s, tag) => {
    const reserved = await s.reserve()
    await reserved`begin`
    await reserved`insert into doors (tag) values (${tag})`
    await reserved`commit`
    reserved.release()
  },
  'COPY FROM STDIN (.writable())': async (s, tag) => {
    const writable = await s`copy doors (tag) from stdin`.writable()
    await pipeline(Readable.from([`${tag}\n`]), writable)
  },
}

for (const [door, write] of Object.entries(writeDoors)) {
  sessions(`a session reads its write made through ${door}`, async () => {
    const s = sql.session()
    const tag = tagged('door')
    await write(s, tag)
    assert.is.not(s.token, '0/0', 'the write raised the position')
    assert.is.not(s.token, 'FFFFFFFF/FFFFFFFF', 'the position is a real one')
    assert.is(await countOf(tag, s), 1, `the session read after ${door} saw the write`)
    assert.is(await countOf(tag, admin), 1, 'the leader has exactly the one row')
  })
}

sessions('session reads through .cursor() and COPY TO never go back in time', async () => {
  const tag = tagged('monotonic')
  await sql`insert into doors (tag) values (${tag})`
  const s = sql.session()
  // Read on the leader, which has the row; every later read of the session must have it too.
  const first = []
  for await (const [row] of s.leader`select count(*)::int as n from doors where tag = ${tag}`.cursor(1)) first.push(row.n)
  assert.equal(first, [1])
  for await (const [row] of s`select count(*)::int as n from doors where tag = ${tag}`.cursor(1)) assert.is(row.n, 1, 'the cursor read went back')
  await s`select count(*)::int as n from doors where tag = ${tag}`.forEach((row) => assert.is(row.n, 1, 'forEach went back'))
  const readable = await s.unsafe(`copy (select count(*) from doors where tag = '${tag}') to stdout`).readable()
  let out = ''
  for await (const chunk of readable) out += chunk
  assert.is(out.trim(), '1', 'COPY TO went back')
})

sessions('.describe() and cancel() work in a session; a read cancelled while it waits leaves the pool usable', async () => {
  const patient = connect({ ...cluster.descriptor, sessionWait: 1000, postgres: { onnotice: () => {} } })
  try {
    const s = patient.session()
    const described = await s`select id, tag from doors where id = ${1}`.describe()
    assert.equal(described.columns.map((c) => c.name), ['id', 'tag'])
    const running = s`select pg_sleep(5)`
    setTimeout(() => running.cancel(), 200)
    const began = Date.now()
    const error = await running.catch((e) => e)
    assert.is(error.code, '57014')
    assert.ok(Date.now() - began < 4000, 'cancelled well before the sleep ended')
    // Position ahead of the lagging replica: the next read waits for it, and is cancelled meanwhile.
    await s`insert into doors (tag) values (${tagged('cancel')})`
    const waiting = s`select 1 as one`
    waiting.cancel()
    assert.is((await waiting.catch((e) => e)).code, '57014')
    const ones = await Promise.all(Array.from({ length: 30 }, () => patient.leader`select 1 as one`))
    assert.is(ones.length, 30)
  } finally {
    await patient.end()
  }
})

sessions.run()

// ---------------------------------------------------------------------------
const reserve = suite('reserved connections route')

reserve.before(async () => {
  await setApplyDelay('0')
  await caughtUp()
})

reserve('a reserved connection whose first statement is a read binds to a replica, and stays on one backend', async () => {
  const reserved = await sql.reserve()
  const [a] = await reserved`select inet_server_port() as port, pg_backend_pid() as pid`
  const [b] = await reserved`select inet_server_port() as port, pg_backend_pid() as pid`
  reserved.release()
  assert.is(a.port, replicaPort)
  assert.equal(b, a)
})

reserve("BEGIN binds to the leader; one connection's state holds until release", async () => {
  const reserved = await sql.reserve()
  const tag = tagged('reserved-tx')
  await reserved`begin`
  await reserved`insert into doors (tag) values (${tag})`
  const [inside] = await reserved`select count(*)::int as n, inet_server_port() as port from doors where tag = ${tag}`
  await reserved`rollback`
  reserved.release()
  assert.equal(inside, { n: 1, port: leaderPort })
  assert.is(await countOf(tag, admin), 0)
})

reserve('a connection bound to a replica moves to the leader at its first write', async () => {
  const reserved = await sql.reserve()
  const tag = tagged('moved')
  const [read] = await reserved`select inet_server_port() as port`
  await reserved`insert into doors (tag) values (${tag})`
  const [after] = await reserved`select inet_server_port() as port, count(*)::int as n from doors where tag = ${tag}`
  reserved.release()
  assert.is(read.port, replicaPort)
  assert.equal(after, { port: leaderPort, n: 1 })
})

reserve('Kysely on the tag reads from the replica; on a session it reads its own writes; destroy() ends nothing', async () => {
  await setApplyDelay('1500ms')
  try {
    const db = new Kysely({ dialect: new PostgresJSDialect({ postgres: sql }) })
    const [{ port }] = await kyselySql`select inet_server_port() as port`.execute(db).then((r) => r.rows)
    assert.is(port, replicaPort, 'a Kysely read went to the replica')
    let streamed = 0
    for await (const _ of db.selectFrom('doors').select('tag').limit(3).stream(1)) streamed++
    assert.is(streamed, 3, 'Kysely streamed through a cursor on a reserved connection')

    const s = sql.session()
    const sessionDb = new Kysely({ dialect: new PostgresJSDialect({ postgres: s }) })
    const tag = tagged('kysely')
    await sessionDb.insertInto('doors').values({ tag }).execute()
    assert.is.not(s.token, '0/0', 'the Kysely insert raised the session position')
    const rows = await sessionDb.selectFrom('doors').select('tag').where('tag', '=', tag).execute()
    assert.equal(rows, [{ tag }])
    await sessionDb.destroy()
    await s.end()
    assert.is(await countOf(tag, sql.leader), 1, 'the root tag still works after a session was ended')
  } finally {
    await setApplyDelay('0')
  }
})

reserve.run()

// ---------------------------------------------------------------------------
const errors = suite("errors keep postgres.js's identity")

errors('a leader that refuses connections: LeaderUnavailableError with code ECONNREFUSED, its cause and host:port', async () => {
  const port = await freePort()
  const gone = connect({ leader: `postgres://u:secret@127.0.0.1:${port}/db`, replicas: [], connectTimeout: 1000 })
  try {
    const error = await gone`insert into doors (tag) values ('x')`.catch((e) => e)
    assert.instance(error, LeaderUnavailableError)
    assert.is(error.code, 'ECONNREFUSED')
    assert.is(error.pgfollowCode, 'PGFOLLOW_LEADER_UNAVAILABLE')
    assert.is(error.cause?.code, 'ECONNREFUSED')
    assert.ok(error.message.includes(`127.0.0.1:${port}`), error.message)
    assert.not.ok(error.message.includes('secret'))
  } finally {
    await gone.end({ timeout: 0 })
  }
})

errors('a wrong password: code 28P01 as postgres.js reports it', async () => {
  const url = new URL(cluster.descriptor.leader)
  url.password = 'wrong'
  const refused = connect({ leader: url.toString(), replicas: [] })
  try {
    const error = await refused`select 1`.catch((e) => e)
    assert.is(error.code, '28P01', error.message)
  } finally {
    await refused.end({ timeout: 0 })
  }
})

errors("an SQL error's stack shows the caller, through the tag and a session", async () => {
  for (const via of [sql, sql.session(), sql.leader]) {
    const query = (function theCallSite() {
      return via`select * from no_such_table`
    })()
    // postgres.js keeps 4 frames where a statement was made and appends them to its error's stack.
    assert.match(query.origin, /theCallSite/, 'the frames kept end at the caller')
    const error = await query.catch((e) => e)
    assert.is(error.code, '42P01')
    assert.match(error.stack, /theCallSite/)
  }
})

errors('after end(): CONNECTION_ENDED; end({ timeout: 0 }) destroys what runs: CONNECTION_DESTROYED', async () => {
  const short = connect({ ...cluster.descriptor, postgres: { onnotice: () => {} } })
  const sleeping = short.leader`select pg_sleep(5)`.catch((e) => e)
  await new Promise((r) => setTimeout(r, 300))
  const began = Date.now()
  await short.end({ timeout: 0 })
  const destroyed = await sleeping
  assert.ok(Date.now() - began < 3000, 'end({ timeout: 0 }) did not wait for the statement')
  assert.is(destroyed.code, 'CONNECTION_DESTROYED', destroyed.message)
  const ended = await short`insert into doors (tag) values ('late')`.catch((e) => e)
  assert.is(ended.code, 'CONNECTION_ENDED', ended.message)
})

errors('subscribe, listen and notify exist on the tag and run on the leader', async () => {
  assert.type(sql.subscribe, 'function')
  let hear
  const heard = new Promise((resolve) => (hear = resolve))
  await sql.listen('doors', hear)
  await sql.notify('doors', 'hello')
  assert.is(await heard, 'hello')
})

errors.after(async () => {
  await sql.end()
  await admin.end()
  await replicaAdmin.end()
  await cluster.stop()
})

errors.run()
