// @deno
// "It is postgres.js": every door of postgres.js's API gives the same result
// through the tag and through a session as on plain postgres.js, against the
// same cluster. Each door runs three ways (raw pool on the leader, tag,
// session) and the results are compared; where routing matters, the server
// says where a statement ran. A second suite makes the replicas lag and
// checks that a session sees its own writes whichever door made them.
import process from 'node:process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { connect, LeaderUnavailableError } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'

// A COPY whose connection dies emits the error on a stream before the caller
// holds it (postgres.js resolves writable() with it): kept here, so the
// file reports it as a failed test instead of crashing; the last test checks.
const escaped = []
process.on('uncaughtException', (error) => escaped.push(`${error.code ?? ''} ${error.message}`))

const cluster = await startCluster({ replicas: 1 })
const leaderPort = cluster.ports[0]
const replicaPort = cluster.ports[1]
const files = mkdtempSync(join(tmpdir(), 'pgfollow-conformance-'))
const options = { max: 2, onnotice: () => {} }
const raw = postgres(cluster.descriptor.leader, options)
const tag = connect({ ...cluster.descriptor, monitorInterval: 200, postgres: options })
const targets = { raw, tag, session: tag.session() }

await raw`create table conformance (id serial primary key, name text, at timestamptz default now())`

/** Runs `door` through raw postgres.js, the tag and a session; all three must agree. */
async function sameEverywhere(door, normalize = plain) {
  const results = {}
  for (const [name, sql] of Object.entries(targets)) {
    try {
      results[name] = normalize(await door(sql, name))
    } catch (error) {
      results[name] = { threw: error.code ?? error.message }
    }
  }
  assert.equal(results.tag, results.raw, 'tag differs from postgres.js')
  assert.equal(results.session, results.raw, 'session differs from postgres.js')
  return results.raw
}

/** Rows as plain data plus what postgres.js hangs on a result. */
function plain(result) {
  if (!Array.isArray(result) || !('command' in result)) return result
  return {
    rows: result.map((row) => (Array.isArray(row) || typeof row !== 'object' || row === null ? row : { ...row })),
    count: result.count,
    command: result.command,
    columns: result.columns?.map((column) => [column.name, column.type]),
  }
}

async function collect(iterable) {
  const out = []
  for await (const item of iterable) out.push(item)
  return out
}

const doors = suite('every door gives postgres.js results')

doors('tagged template', async () => {
  const result = await sameEverywhere((sql) => sql`select ${1}::int as a, ${'x'} as b, ${[1, 2]}::int[] as c`)
  assert.equal(result.rows, [{ a: 1, b: 'x', c: [1, 2] }])
})

doors('.values()', async () => {
  const result = await sameEverywhere((sql) => sql`select 1 as a, 'b' as b`.values())
  assert.equal(result.rows, [[1, 'b']])
})

doors('.raw()', async () => {
  const result = await sameEverywhere(
    (sql) => sql`select 1 as a, 'b' as b`.raw(),
    (rows) => rows.map((row) => row.map((cell) => String(cell))),
  )
  assert.equal(result, [['1', 'b']])
})

doors('.simple() with two statements', async () => {
  const result = await sameEverywhere(
    (sql) => sql`select 1 as a; select 2 as b`.simple(),
    (results) => results.map(plain),
  )
  assert.equal(result.map((r) => r.rows), [[{ a: 1 }], [{ b: 2 }]])
})

doors('.execute() runs at once and resolves as the query', async () => {
  const result = await sameEverywhere((sql) => sql`select 42 as answer`.execute())
  assert.equal(result.rows, [{ answer: 42 }])
})

doors('.describe()', async () => {
  const result = await sameEverywhere(
    (sql) => sql`select name from conformance where id = ${1}`.describe(),
    (described) => ({ types: described.types, columns: described.columns.map((c) => c.name), string: described.string }),
  )
  assert.equal(result.types, [23])
})

doors('.cursor(n) batches', async () => {
  const result = await sameEverywhere(
    (sql) => collect(sql`select n from generate_series(1, 5) n`.cursor(2)),
    (batches) => batches.map((batch) => batch.map((row) => row.n)),
  )
  assert.equal(result, [[1, 2], [3, 4], [5]])
})

doors('.cursor() with break', async () => {
  const result = await sameEverywhere(async (sql) => {
    const seen = []
    for await (const [row] of sql`select n from generate_series(1, 100) n`.cursor()) {
      seen.push(row.n)
      if (seen.length === 3) break
    }
    return seen
  })
  assert.equal(result, [1, 2, 3])
})

doors('.forEach()', async () => {
  const result = await sameEverywhere(async (sql) => {
    const seen = []
    const done = await sql`select n from generate_series(1, 4) n`.forEach((row) => seen.push(row.n))
    return { seen, count: done.count, command: done.command }
  })
  assert.equal(result.seen, [1, 2, 3, 4])
})

doors('sql.file(path), sql.file(path, args) and sql.file(path, options)', async () => {
  const plainFile = join(files, 'plain.sql')
  const paramFile = join(files, 'param.sql')
  writeFileSync(plainFile, 'select 1 as x')
  writeFileSync(paramFile, 'select $1::int as x')
  const result = await sameEverywhere(async (sql) => [
    (await sql.file(plainFile))[0].x,
    (await sql.file(paramFile, [7]))[0].x,
    (await sql.file(plainFile, { cache: false }))[0].x,
    (await sql.file(paramFile, [8], { cache: false }))[0].x,
    await sql.file(join(files, 'missing.sql')).catch((error) => error.code),
  ])
  assert.equal(result, [1, 7, 1, 8, 'ENOENT'])
})

doors('sql.unsafe(text, args) and unsafe(text, args, { prepare })', async () => {
  const result = await sameEverywhere(async (sql) => [
    (await sql.unsafe('select $1::int as x', [5]))[0].x,
    (await sql.unsafe('select $1::text as y', ['t'], { prepare: true }))[0].y,
    (await sql.unsafe('select 1 as a; select 2 as b')).length,
  ])
  assert.equal(result, [5, 't', 2])
})

doors('fragments, helpers, sql.json, sql.array', async () => {
  const result = await sameEverywhere(async (sql) => {
    const where = sql`where n > ${2}`
    const rows = await sql`select n from generate_series(1, 4) n ${where}`
    const [row] = await sql`select ${sql.json({ a: [1] })}::jsonb as j, ${sql.array([1, 2])}::int[] as arr`
    const [inserted] = await sql`insert into conformance ${sql({ name: 'helper', ignored: 1 }, 'name')} returning name`
    return { rows: rows.map((r) => r.n), row: { ...row }, inserted: { ...inserted } }
  })
  assert.equal(result.rows, [3, 4])
})

doors('COPY: .writable() then .readable()', async () => {
  const result = await sameEverywhere(async (sql, name) => {
    await raw`create table if not exists copied (who text, n int)`
    const writable = await sql`copy copied (who, n) from stdin`.writable()
    await pipeline(Readable.from([`${name}\t1\n`, `${name}\t2\n`]), writable)
    const readable = await sql.unsafe(`copy (select n from copied where who = '${name}' order by n) to stdout`).readable()
    let text = ''
    await pipeline(readable, new Writable({ write: (chunk, _, done) => ((text += chunk), done()) }))
    const [{ count }] = await raw`select count(*)::int from copied where who = ${name}`
    return { text, count }
  })
  assert.equal(result, { text: '1\n2\n', count: 2 })
})

doors('reserve(): one connection, released', async () => {
  const result = await sameEverywhere(async (sql) => {
    const reserved = await sql.reserve()
    try {
      await reserved`select set_config('pgfollow.probe', 'kept', false)`
      const [row] = await reserved`select current_setting('pgfollow.probe') as probe`
      return row.probe
    } finally {
      reserved.release()
    }
  })
  assert.is(result, 'kept', 'session state holds on a reserved connection')
})

doors('listen and notify', async () => {
  const result = await sameEverywhere(async (sql, name) => {
    const channel = `conformance_${name}`
    let resolve
    const payload = new Promise((r) => (resolve = r))
    const { unlisten } = await sql.listen(channel, resolve)
    await sql.notify(channel, `hello ${name}`)
    const got = await Promise.race([payload, new Promise((r) => setTimeout(() => r('no notification'), 5000))])
    await unlisten()
    return got.replace(name, 'NAME')
  })
  assert.is(result, 'hello NAME')
})

doors('begin, savepoint, rollback of the savepoint', async () => {
  const result = await sameEverywhere(async (sql, name) => {
    const [{ count }] = await sql.begin(async (tx) => {
      await tx`insert into conformance (name) values (${name})`
      await tx.savepoint(async (sp) => {
        await sp`insert into conformance (name) values (${name})`
        await sp`select 1/0`
      }).catch(() => {})
      return tx`select count(*)::int, inet_server_port() = ${leaderPort} as on_leader from conformance where name = ${name}`
    })
    return count
  })
  assert.is(result, 1)
})

doors('begin with options and a thrown error rolls back', async () => {
  const result = await sameEverywhere(async (sql, name) => {
    const error = await sql.begin('isolation level serializable', async (tx) => {
      await tx`insert into conformance (name) values (${name + '-rolled'})`
      throw new Error('boom')
    }).catch((e) => e.message)
    const [{ count }] = await raw`select count(*)::int from conformance where name = ${name + '-rolled'}`
    return { error, count }
  })
  assert.equal(result, { error: 'boom', count: 0 })
})

doors('cancel() stops a running statement with 57014', async () => {
  const result = await sameEverywhere((sql) => {
    const query = sql`select pg_sleep(10)`
    setTimeout(() => query.cancel(), 300)
    return query.then(() => 'not cancelled', (error) => error.code)
  })
  assert.is(result, '57014')
})

doors('errors: SQLSTATE, class, position', async () => {
  const result = await sameEverywhere(async (sql) => {
    const syntax = await sql`selec 1`.catch((e) => e)
    const unique = await sql`insert into conformance (id) values (1), (1)`.catch((e) => e)
    return [
      syntax.code,
      syntax instanceof postgres.PostgresError,
      syntax instanceof sql.PostgresError,
      syntax.position,
      unique.code,
      unique.constraint_name,
    ]
  })
  assert.equal(result, ['42601', true, true, '1', '23505', 'conformance_pkey'])
})

doors('a connection error keeps its code: ECONNREFUSED, 28P01', async () => {
  const dead = `postgres://postgres:x@127.0.0.1:1/postgres`
  const wrongPassword = cluster.descriptor.leader.replace(/:[^:@/]*@/, ':wrong@')
  const codeOf = (query) => query.then(() => 'connected', (error) => error.code)
  const refusedRaw = postgres(dead, { max: 1, connect_timeout: 2 })
  const refusedTag = connect({ leader: dead, replicas: [] })
  const deniedRaw = postgres(wrongPassword, { max: 1 })
  const deniedTag = connect({ leader: wrongPassword, replicas: [] })
  try {
    const write = (sql) => sql`insert into conformance (name) values ('never')`
    assert.is(await codeOf(write(refusedRaw)), 'ECONNREFUSED')
    assert.is(await codeOf(write(refusedTag)), 'ECONNREFUSED', "the tag keeps postgres.js's error.code")
    assert.is(await codeOf(write(refusedTag.session())), 'ECONNREFUSED')
    assert.is(await codeOf(deniedRaw`select 1`), '28P01')
    assert.is(await codeOf(deniedTag`select 1`), '28P01', 'the tag keeps the SQLSTATE of a failed login')
    assert.is(await codeOf(write(deniedTag)), '28P01')
  } finally {
    await Promise.all([refusedRaw.end(), refusedTag.end(), deniedRaw.end(), deniedTag.end()])
  }
})

doors('a read no node can serve is a LeaderUnavailableError (a listed difference)', async () => {
  // postgres.js says ECONNREFUSED here; the router tried every node and says
  // so. README lists this; the driver's code should become reachable too.
  const refusedTag = connect({ leader: 'postgres://postgres:x@127.0.0.1:1/postgres', replicas: [] })
  try {
    const error = await refusedTag`select 1`.catch((e) => e)
    assert.instance(error, LeaderUnavailableError)
    assert.is(error.pgfollowCode, 'PGFOLLOW_LEADER_UNAVAILABLE')
  } finally {
    await refusedTag.end()
  }
})

doors('options: types, transform and parsers apply to every node', async () => {
  const shaped = { ...options, transform: postgres.camel, types: { bigint: postgres.BigInt } }
  const rawShaped = postgres(cluster.descriptor.leader, shaped)
  const tagShaped = connect({ ...cluster.descriptor, postgres: shaped })
  try {
    const read = (sql) => sql`select 9007199254740993::int8 as big_number, inet_server_port() as port`
    const [fromRaw] = await read(rawShaped)
    const [fromTag] = await read(tagShaped)
    const [fromSession] = await read(tagShaped.session())
    assert.is(fromTag.port, replicaPort, 'a plain read runs on the replica')
    for (const row of [fromTag, fromSession]) {
      assert.is(typeof row.bigNumber, 'bigint', 'transform and types reach the replica')
      assert.is(row.bigNumber, fromRaw.bigNumber)
    }
  } finally {
    await Promise.all([rawShaped.end(), tagShaped.end()])
  }
})

doors('options mutated after creation (as Drizzle does) reach every node', async () => {
  const mutated = connect({ ...cluster.descriptor, postgres: options })
  try {
    // Drizzle replaces these parsers so timestamps stay strings.
    for (const oid of [1114, 1184]) mutated.options.parsers[oid] = (value) => `parsed:${value}`
    const rows = []
    for (let i = 0; i < 4; i++) rows.push((await mutated`select '2020-01-01 00:00:00'::timestamp as t, inet_server_port() as port`)[0])
    assert.ok(rows.some((row) => row.port === replicaPort), 'some reads ran on the replica')
    for (const row of rows) assert.is(row.t, 'parsed:2020-01-01 00:00:00', `parser applied on port ${row.port}`)
  } finally {
    await mutated.end()
  }
})

doors("the debug hook sees the user's statements only", async () => {
  const seen = []
  const debugged = connect({ ...cluster.descriptor, monitorInterval: 50, postgres: { ...options, debug: (_c, query) => seen.push(query) } })
  try {
    const session = debugged.session()
    await session`insert into conformance (name) values ('debug')`
    await session`select name from conformance where name = 'debug'`
    await new Promise((r) => setTimeout(r, 200))
    // postgres.js's own type fetch on a new connection shows in its debug hook too.
    const mine = seen.filter((query) => !query.includes('pg_catalog.pg_type'))
    assert.equal(mine, ["insert into conformance (name) values ('debug')", "select name from conformance where name = 'debug'"])
  } finally {
    await debugged.end()
  }
})

doors('routing: a plain read on the replica, a write and a transaction on the leader', async () => {
  await tag.refresh()
  const [read] = await tag`select inet_server_port() as port`
  const [write] = await tag`insert into conformance (name) values ('route') returning inet_server_port() as port`
  const [inTx] = await tag.begin((tx) => tx`select inet_server_port() as port`)
  assert.equal([read.port, write.port, inTx.port], [replicaPort, leaderPort, leaderPort])
})

// ---

const lagging = suite('a session sees its own writes, through every door')

lagging.before(async () => {
  const replica = postgres(cluster.descriptor.replicas[0], { max: 1, onnotice: () => {} })
  await replica`alter system set recovery_min_apply_delay = '1500ms'`
  await replica`select pg_reload_conf()`
  await replica.end()
})

/** Writes through `write(session, marker)`, then a plain session read must see the marker. */
async function seesItsWrite(write) {
  const session = tag.session()
  const marker = `w-${Math.random().toString(36).slice(2)}`
  await write(session, marker)
  const rows = await session`select id from conformance where name = ${marker}`
  assert.is(rows.length, 1, `the session's next read missed its write (token ${session.token})`)
}

lagging(
  'a write consumed with .forEach()',
  () => seesItsWrite((s, m) => s`insert into conformance (name) values (${m}) returning id`.forEach(() => {})),
)

lagging(
  'a write consumed with .cursor()',
  () => seesItsWrite((s, m) => collect(s`insert into conformance (name) values (${m}) returning id`.cursor())),
)

lagging('a write with .values(), .raw(), .simple(), .execute()', async () => {
  await seesItsWrite((s, m) => s`insert into conformance (name) values (${m})`.values())
  await seesItsWrite((s, m) => s`insert into conformance (name) values (${m})`.raw())
  await seesItsWrite((s, m) => s.unsafe(`insert into conformance (name) values ('${m}')`).simple())
  await seesItsWrite((s, m) => s`insert into conformance (name) values (${m})`.execute())
})

lagging('a write through sql.unsafe and sql.file', async () => {
  await seesItsWrite((s, m) => s.unsafe('insert into conformance (name) values ($1)', [m]))
  const file = join(files, 'insert.sql')
  writeFileSync(file, 'insert into conformance (name) values ($1)')
  await seesItsWrite((s, m) => s.file(file, [m]))
})

lagging('a write on a reserved connection', () =>
  seesItsWrite(async (s, m) => {
    const reserved = await s.reserve()
    try {
      await reserved`insert into conformance (name) values (${m})`
    } finally {
      reserved.release()
    }
  }))

lagging('a write through COPY FROM STDIN keeps the rows and a usable token', async () => {
  const session = tag.session()
  const marker = `copy-${Math.random().toString(36).slice(2)}`
  const writable = await session`copy conformance (name) from stdin`.writable()
  await pipeline(Readable.from([`${marker}\n`]), writable)
  const [{ count }] = await raw`select count(*)::int from conformance where name = ${marker}`
  assert.is(count, 1, 'the copied row reached the leader')
  assert.is.not(session.token, 'FFFFFFFF/FFFFFFFF')
  const rows = await session`select id from conformance where name = ${marker}`
  assert.is(rows.length, 1, "the session's read after COPY saw the row")
})

lagging('reads through .cursor() alone never go back in time', async () => {
  const session = tag.session()
  const marker = `mono-${Math.random().toString(36).slice(2)}`
  await raw`insert into conformance (name) values (${marker})`
  // The leader is the only node that has the row now: once a session read sees it, later ones must too.
  const [first] = await session.leader`select count(*)::int from conformance where name = ${marker}`
  assert.is(first.count, 1)
  const batches = await collect(session`select id from conformance where name = ${marker}`.cursor())
  assert.is(batches.flat().length, 1, 'a cursor read after a newer read went back in time')
})

lagging('no error escaped to the process', () => {
  assert.equal(escaped, [])
})

lagging.after(async () => {
  await tag.end()
  await raw.end()
  rmSync(files, { recursive: true, force: true })
  await cluster.stop()
})

doors.run()
lagging.run()
