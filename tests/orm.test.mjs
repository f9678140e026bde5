// Drizzle ORM (drizzle-orm/postgres-js) and Kysely (kysely-postgres-js) on
// the tag and on a session: each statement runs on the right node (the
// tag's per-node `served` counters say which) and every result equals the
// same ORM on plain postgres.js, with timestamp, timestamptz and jsonb
// columns, in a process whose time zone is not UTC. Then read-your-writes:
// Drizzle's own `withReplicas` against `drizzle(sql.session())`.
// Node only: the time zone is set through process.env.TZ, which Node applies at once.
import process from 'node:process'

// Before any Date is made: a replica that parsed timestamps in the process's
// zone would shift them, which UTC would hide.
process.env.TZ = 'America/New_York'

import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import postgres from 'postgres'
import { and, eq, gte, relations, sql as dsql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/postgres-js'
import { integer, jsonb, pgTable, serial, text, timestamp, withReplicas } from 'drizzle-orm/pg-core'
import { Kysely } from 'kysely'
import { PostgresJSDialect } from 'kysely-postgres-js'
import { connect } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'

const authors = pgTable('authors', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  born: timestamp('born'),
  joined: timestamp('joined', { withTimezone: true }),
  seen: timestamp('seen', { withTimezone: true, mode: 'string', precision: 6 }),
  meta: jsonb('meta'),
})
const books = pgTable('books', {
  id: serial('id').primaryKey(),
  authorId: integer('author_id').notNull().references(() => authors.id),
  title: text('title').notNull(),
})
const authorsRelations = relations(authors, ({ many }) => ({ books: many(books) }))
const booksRelations = relations(books, ({ one }) => ({ author: one(authors, { fields: [books.authorId], references: [authors.id] }) }))
const schema = { authors, books, authorsRelations, booksRelations }

const cluster = await startCluster({ migrate: false })
const [leaderUrl, ...replicaUrls] = [cluster.descriptor.leader, ...cluster.descriptor.replicas]
const quiet = { onnotice: () => {} }

await setUpSchema()

/**
 * Three clients per ORM (each ORM sets its own parsers on them): plain
 * postgres.js on the leader (the reference), the tag, and a session of it.
 */
function makeClients() {
  const tag = connect({ ...cluster.descriptor, monitorInterval: 200, postgres: quiet })
  return { raw: postgres(leaderUrl, quiet), tag, session: tag.session() }
}
const drizzleClients = makeClients()
const kyselyClients = makeClients()

async function setUpSchema() {
  const admin = postgres(leaderUrl, { max: 1, ...quiet })
  await admin.unsafe(`
    create table authors (id serial primary key, name text not null, born timestamp, joined timestamptz, seen timestamptz(6), meta jsonb);
    create table books (id serial primary key, author_id int not null references authors, title text not null);
    insert into authors (name, born, joined, seen, meta) values
      ('Ada', '1815-12-10 08:30:00', '2024-03-10 06:59:59.123456+00', '2024-11-03 05:30:00.654321+00', '{"tags": ["math"], "n": 1}'),
      ('Grace', '1906-12-09 23:45:00', '2024-11-03 06:30:00.5+00', '2025-03-09 06:00:00.000001+00', '{"tags": ["cobol"], "n": 2}'),
      ('Edsger', '1930-05-11 00:00:00', null, null, null);
    insert into books (author_id, title) values (1, 'Notes'), (2, 'COBOL'), (2, 'Nanoseconds'), (3, 'GOTO');
  `)
  await admin.end()
  await untilReplicated(`select count(*)::int as n from books`, 4)
}

/** Waits until every replica answers `query` with n = expected. */
async function untilReplicated(query, expected) {
  for (const url of replicaUrls) {
    const replica = postgres(url, { max: 1, ...quiet })
    const deadline = Date.now() + 10_000
    while ((await replica.unsafe(query))[0].n !== expected) {
      if (Date.now() > deadline) throw new Error(`replica ${url} did not catch up`)
      await new Promise((r) => setTimeout(r, 20))
    }
    await replica.end()
  }
}

/** Which roles served the statements `run` made, from the tag's per-node counters. */
async function servedBy(tag, run) {
  // Statements and transactions are counted apart: either means the node ran something.
  const count = (node) => node.served + node.transactions
  const before = tag.status().map(count)
  const result = await run()
  const after = tag.status()
  const roles = new Set(after.filter((node, i) => count(node) > before[i]).map((node) => node.role))
  return { result, roles: [...roles].sort() }
}

/**
 * Runs `query(orm)` with the ORM on each client: the tag and the session
 * must give what plain postgres.js gives, and run on `where` ('replica' or 'leader').
 */
async function sameAsPostgresJs({ orms, tag }, query, where, normalize = (x) => x) {
  const reference = normalize(await query(orms.raw, 'raw'))
  for (const via of ['tag', 'session']) {
    const { result, roles } = await servedBy(tag, () => query(orms[via], via))
    assert.equal(normalize(result), reference, `${via}: result differs from plain postgres.js`)
    assert.equal(roles, [where], `${via}: ran on ${roles.join(' and ') || 'no counted node'}, ${where} expected`)
  }
  return reference
}

// ---

const drizzleSuite = suite('Drizzle on the tag and on a session')
const dbs = {
  orms: Object.fromEntries(Object.entries(drizzleClients).map(([via, client]) => [via, drizzle(client, { schema })])),
  tag: drizzleClients.tag,
}

drizzleSuite.before(() => drizzleClients.tag.refresh())

drizzleSuite('the process runs in a non-UTC zone', () => {
  assert.is.not(new Date('2024-01-01T00:00:00Z').getTimezoneOffset(), 0)
})

drizzleSuite('select with timestamp, timestamptz and jsonb columns: a replica, same values', async () => {
  const rows = await sameAsPostgresJs(dbs, (db) => db.select().from(authors).orderBy(authors.id), 'replica')
  assert.is(rows[0].born.toISOString(), '1815-12-10T08:30:00.000Z', 'timestamp read as UTC, as Drizzle means it')
  assert.match(rows[0].seen, /^2024-11-0\d \d\d:30:00\.654321[+-]\d\d$/, 'timestamptz strings keep their microseconds')
  assert.equal(rows[0].meta, { tags: ['math'], n: 1 })
})

drizzleSuite('filters on timestamp and jsonb find the same rows on a replica', async () => {
  const rows = await sameAsPostgresJs(
    dbs,
    (db) =>
      db.select({ id: authors.id }).from(authors).where(
        and(gte(authors.born, new Date('1900-01-01T00:00:00Z')), eq(authors.meta, { tags: ['cobol'], n: 2 })),
      ),
    'replica',
  )
  assert.equal(rows, [{ id: 2 }])
})

drizzleSuite('joins', async () => {
  const rows = await sameAsPostgresJs(
    dbs,
    (db) =>
      db.select({ author: authors.name, title: books.title, joined: authors.joined }).from(books)
        .innerJoin(authors, eq(books.authorId, authors.id)).orderBy(books.id),
    'replica',
  )
  assert.is(rows.length, 4)
})

drizzleSuite('relational queries (db.query ... with)', async () => {
  const rows = await sameAsPostgresJs(
    dbs,
    (db) => db.query.authors.findMany({ with: { books: { orderBy: (b, { asc }) => asc(b.id) } }, orderBy: (a, { asc }) => asc(a.id) }),
    'replica',
  )
  assert.equal(rows[1].books.map((b) => b.title), ['COBOL', 'Nanoseconds'])
})

drizzleSuite('.prepare() and execute()', async () => {
  const prepared = (db) => db.select().from(authors).where(eq(authors.id, dsql.placeholder('id'))).prepare('author_by_id')
  const rows = await sameAsPostgresJs(dbs, (db) => prepared(db).execute({ id: 2 }), 'replica')
  assert.is(rows[0].name, 'Grace')
})

drizzleSuite('db.execute with a read and with a write', async () => {
  await sameAsPostgresJs(dbs, (db) => db.execute(dsql`select name, born, meta from authors order by id`).then((r) => [...r]), 'replica')
  await sameAsPostgresJs(
    dbs,
    (db) => db.execute(dsql`update authors set name = name where id = 3 returning name`).then((r) => [...r]),
    'leader',
  )
})

drizzleSuite('insert, update, delete returning: the leader, same values', async () => {
  // Each client writes its own row (name suffixed by the client), compared without ids and suffixes.
  const normalize = (rows) => rows.map(({ id: _id, name, ...rest }) => ({ name: name.replace(/-\w+$/, ''), ...rest }))
  const values = (via) => ({
    name: `Barbara-${via}`,
    born: new Date('1939-11-07T12:00:00Z'),
    joined: new Date('2024-06-01T12:00:00.250Z'),
    seen: '2024-06-01 12:00:00.123456+00',
    meta: { tags: ['clu'], n: 3 },
  })
  await sameAsPostgresJs(dbs, (db, via) => db.insert(authors).values(values(via)).returning(), 'leader', normalize)
  const updated = await sameAsPostgresJs(
    dbs,
    (db, via) => db.update(authors).set({ meta: { tags: ['clu', 'liskov'], n: 4 } }).where(eq(authors.name, `Barbara-${via}`)).returning(),
    'leader',
    normalize,
  )
  assert.equal(updated[0].meta, { tags: ['clu', 'liskov'], n: 4 })
  await sameAsPostgresJs(
    dbs,
    (db, via) => db.delete(authors).where(eq(authors.name, `Barbara-${via}`)).returning({ name: authors.name, seen: authors.seen }),
    'leader',
    normalize,
  )
})

drizzleSuite('transactions run on the leader and see their own writes', async () => {
  const count = await sameAsPostgresJs(
    dbs,
    (db) =>
      db.transaction(async (tx) => {
        const [book] = await tx.insert(books).values({ authorId: 3, title: 'In a transaction' }).returning()
        const seen = await tx.select().from(books).where(eq(books.id, book.id))
        await tx.delete(books).where(eq(books.id, book.id))
        return seen.length
      }),
    'leader',
  )
  assert.is(count, 1)
})

// ---

const kyselySuite = suite('Kysely on the tag and on a session')
const kyselys = {
  orms: Object.fromEntries(
    Object.entries(kyselyClients).map(([via, client]) => [via, new Kysely({ dialect: new PostgresJSDialect({ postgres: client }) })]),
  ),
  tag: kyselyClients.tag,
}

kyselySuite.before(() => kyselyClients.tag.refresh())

kyselySuite('select with timestamp, timestamptz and jsonb columns: a replica, same values', async () => {
  const rows = await sameAsPostgresJs(kyselys, (db) => db.selectFrom('authors').selectAll().orderBy('id').execute(), 'replica')
  assert.instance(rows[0].born, Date)
  assert.equal(rows[1].meta, { tags: ['cobol'], n: 2 })
})

kyselySuite('a join with a filter', async () => {
  const rows = await sameAsPostgresJs(
    kyselys,
    (db) =>
      db.selectFrom('books').innerJoin('authors', 'authors.id', 'books.author_id')
        .select(['authors.name', 'books.title', 'authors.seen']).where('authors.born', '<', new Date('1920-01-01T00:00:00Z'))
        .orderBy('books.id').execute(),
    'replica',
  )
  assert.is(rows.length, 3)
})

kyselySuite('insert returning: the leader, same values', async () => {
  const row = await sameAsPostgresJs(
    kyselys,
    (db) =>
      // postgres.js serialises jsonb parameters itself: an object, not a JSON string.
      db.insertInto('authors').values({ name: 'Kysely', born: new Date('2000-01-01T00:00:00Z'), meta: { k: 1 } })
        .returning(['name', 'born', 'meta']).executeTakeFirst(),
    'leader',
  )
  assert.equal(row.meta, { k: 1 })
  await kyselyClients.raw`delete from authors where name = 'Kysely'`
})

kyselySuite('transactions run on the leader', async () => {
  const seen = await sameAsPostgresJs(
    kyselys,
    (db) =>
      db.transaction().execute(async (trx) => {
        const { id } = await trx.insertInto('books').values({ author_id: 1, title: 'tx' }).returning('id').executeTakeFirstOrThrow()
        const rows = await trx.selectFrom('books').select('title').where('id', '=', id).execute()
        await trx.deleteFrom('books').where('id', '=', id).execute()
        return rows
      }),
    'leader',
  )
  assert.equal(seen, [{ title: 'tx' }])
})

kyselySuite('streaming: a replica, same rows', async () => {
  const rows = await sameAsPostgresJs(
    kyselys,
    async (db) => {
      const out = []
      for await (const row of db.selectFrom('books').select(['id', 'title']).orderBy('id').stream(2)) out.push(row)
      return out
    },
    'replica',
  )
  assert.is(rows.length, 4)
})

kyselySuite('a session tracks what Kysely wrote: its token moves', async () => {
  const session = kyselyClients.tag.session()
  const db = new Kysely({ dialect: new PostgresJSDialect({ postgres: session }) })
  await db.insertInto('books').values({ author_id: 1, title: 'token' }).execute()
  assert.is.not(session.token, '0/0', 'the session saw the insert')
  await db.deleteFrom('books').where('title', '=', 'token').execute()
})

// ---

const readYourWrites = suite('read-your-writes: withReplicas against drizzle(sql.session())')
const PAIRS = 200
const missed = {}

readYourWrites.before(async () => {
  for (const url of replicaUrls) {
    const replica = postgres(url, { max: 1, ...quiet })
    await replica`alter system set recovery_min_apply_delay = '50ms'`
    await replica`select pg_reload_conf()`
    await replica.end()
  }
})

/** PAIRS times: insert a book, then read it back by id; how many reads missed it. */
async function missesOwnWrite(db) {
  let misses = 0
  for (let i = 0; i < PAIRS; i++) {
    const [book] = await db.insert(books).values({ authorId: 1, title: `pair ${i}` }).returning({ id: books.id })
    const seen = await db.select({ id: books.id }).from(books).where(eq(books.id, book.id))
    if (seen.length === 0) misses++
  }
  return misses
}

readYourWrites("Drizzle's withReplicas misses its own writes", async () => {
  const primary = postgres(leaderUrl, quiet)
  const replicas = replicaUrls.map((url) => postgres(url, quiet))
  try {
    const db = withReplicas(drizzle(primary), replicas.map((client) => drizzle(client)))
    missed.withReplicas = await missesOwnWrite(db)
    assert.ok(missed.withReplicas > 0, 'with replicas 50 ms behind, some reads should miss')
  } finally {
    await Promise.all([primary, ...replicas].map((client) => client.end()))
  }
})

readYourWrites('drizzle(sql.session()) never does, and still reads from replicas', async () => {
  const db = drizzle(drizzleClients.tag.session())
  const { result, roles } = await servedBy(drizzleClients.tag, () => missesOwnWrite(db))
  missed.session = result
  assert.is(missed.session, 0)
  assert.ok(roles.includes('replica'), `session reads served by ${roles}`)
})

readYourWrites('Kysely on a session never does either', async () => {
  const db = new Kysely({ dialect: new PostgresJSDialect({ postgres: kyselyClients.tag.session() }) })
  let misses = 0
  for (let i = 0; i < PAIRS / 4; i++) {
    const { id } = await db.insertInto('books').values({ author_id: 1, title: `k ${i}` }).returning('id').executeTakeFirstOrThrow()
    const rows = await db.selectFrom('books').select('id').where('id', '=', id).execute()
    if (rows.length === 0) misses++
  }
  assert.is(misses, 0)
})

readYourWrites("Kysely's destroy() works on what it was given: plain postgres.js, the tag, a session", async () => {
  for (const [via, db] of Object.entries(kyselys.orms)) {
    // Kysely only ends a client it has used.
    await db.selectFrom('books').select('id').limit(1).execute()
    await db.destroy().catch((error) => assert.unreachable(`${via}: destroy() threw ${error.message}`))
  }
})

readYourWrites.after(async () => {
  console.log(
    `read-your-writes, ${PAIRS} insert-then-read pairs: withReplicas missed ${missed.withReplicas}, drizzle(sql.session()) missed ${missed.session}`,
  )
  for (const client of [drizzleClients.raw, drizzleClients.tag, kyselyClients.raw, kyselyClients.tag]) await client.end().catch(() => {})
  await cluster.stop()
})

drizzleSuite.run()
kyselySuite.run()
readYourWrites.run()
