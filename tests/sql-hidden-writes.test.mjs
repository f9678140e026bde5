// Hidden writes, locks and settings, and questions about the cluster, on a
// real cluster: statements that look like reads but lock, change settings or
// call volatile functions (directly, through a view, an escaped name, an
// identifier fragment, an operator, a cast, a domain's check or a type's
// input function) run on the leader; the server says where, via
// inet_server_port() or pg_locks. Volatile functions declared read-only stay
// on replicas, and a function created through the tag is known at once.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ConfigError, connect } from 'pgfollow'
import { waitForReplay } from 'pgfollow/ops'
import { parseLsn } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'

const cluster = await startCluster()
const options = { ...cluster.descriptor, monitorInterval: 200 }
const sql = connect(options)
const leaderPort = cluster.ports[0]
const replicaPorts = cluster.ports.slice(1)

/** Waits until both replicas replayed what the leader wrote so far. */
async function replicated() {
  const [{ lsn }] = await sql.leader`select pg_current_wal_lsn()::text as lsn`
  await waitForReplay(cluster.descriptor.replicas, parseLsn(lsn), 10_000)
}

await sql.leader.unsafe(`
  create function lock_it(k int) returns bool language plpgsql as $$ begin perform pg_advisory_lock(k); return true; end $$;
  create function unlock_it(k int) returns bool language sql as $$ select pg_advisory_unlock(k) $$;
  create function lose_path() returns text language sql as $$ select set_config('search_path', 'nowhere', false) $$;
  create function lookup(x int) returns int language sql volatile as $$ select x + 1 $$;
  create view locking_view as select pg_try_advisory_lock(4242) as got;
  create view outer_view as select * from locking_view;
  create view blockers as select pid from pg_locks where not granted;

  create function lock_pair(a int, b int) returns bool language plpgsql as $$ begin perform pg_advisory_lock(a); return true; end $$;
  create operator ### (procedure = lock_pair, leftarg = int, rightarg = int);
  create function plain_pair(a int, b int) returns bool language sql immutable as $$ select a = b $$;
  create operator <=> (procedure = plain_pair, leftarg = int, rightarg = int);
  create view pairs as select 61 ### 0 as got;
  create type ticket as (n int);
  create function take_ticket(k int) returns ticket language plpgsql as $$ begin perform pg_advisory_lock(k); return row(k); end $$;
  create cast (int as ticket) with function take_ticket(int);
  create domain locked_int as int check (pg_try_advisory_lock(value::bigint));
  create type mood as enum ('calm', 'busy');
  create function mood_of(t text) returns mood language plpgsql as $$ begin perform pg_advisory_lock(length(t)); return 'calm'::mood; end $$;
  create cast (text as mood) with function mood_of(text) as implicit;
  create function is_calm(m mood) returns bool language sql immutable as $$ select m = 'calm' $$;
  -- a type whose input function is volatile: internal functions, as a C extension's would be
  create type voltype;
  create function voltype_in(cstring) returns voltype language internal volatile strict as 'int4in';
  create function voltype_out(voltype) returns cstring language internal immutable strict as 'int4out';
  create type voltype (input = voltype_in, output = voltype_out, like = int4);
  create table vol_holder (id int, v voltype);
`)
await replicated()
await sql.refresh()

/** Where the statement ran: it must select inet_server_port() as port. */
async function portOf(statement) {
  const [row] = await statement
  return row.port
}

/** Whether the leader holds advisory lock `key` (taken by some session of the tag's pool). */
async function leaderHolds(key) {
  const [row] = await sql.leader`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = ${key} and granted`
  return row.n > 0
}

// ---

const hidden = suite('hidden writes, locks and settings go to the leader')

hidden('a user function that takes an advisory lock', async () => {
  assert.is(await portOf(sql`select lock_it(11), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(11), 'the leader holds the lock the function took')
})

hidden('a view that calls pg_try_advisory_lock, and a view over that view', async () => {
  assert.is(await portOf(sql`select got, inet_server_port() as port from locking_view`), leaderPort)
  assert.ok(await leaderHolds(4242))
  assert.is(await portOf(sql`select got, inet_server_port() as port from public.outer_view`), leaderPort)
})

hidden('a Unicode-escaped name, with and without UESCAPE', async () => {
  assert.is(await portOf(sql`select U&"pg\\005fadvisory_lock"(12), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(12))
  assert.is(await portOf(sql`select U&"pg!005fadvisory!+00005Flock" UESCAPE '!'(13), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(13))
})

hidden('an identifier fragment: sql(name)', async () => {
  assert.is(await portOf(sql`select ${sql('pg_advisory_lock')}(14), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(14))
  // the same call site with a harmless name still reads from a replica
  const [row] = await sql`select ${sql('abs')}(-1) as v, inet_server_port() as port`
  assert.ok(replicaPorts.includes(row.port), `abs() ran on ${row.port}`)
})

hidden('a builder: sql([names]) in a select list', async () => {
  assert.is(await portOf(sql`select ${sql(['pg_advisory_lock'])}(15), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(15))
})

hidden('set_config inside a function never poisons a replica connection', async () => {
  // its own pools: the function does poison the leader connection it runs on, as it would with postgres.js
  const poisoned = connect(options)
  try {
    for (let i = 0; i < 4; i++) assert.is(await portOf(poisoned`select public.lose_path(), inet_server_port() as port`), leaderPort)
    // every pooled replica connection still finds unqualified tables
    const reads = await Promise.all(
      Array.from({ length: 40 }, () => poisoned`select count(*)::int as n, inet_server_port() as port from blogs`),
    )
    for (const [row] of reads) assert.ok(replicaPorts.includes(row.port), `read served by ${row.port}`)
  } finally {
    await poisoned.end()
  }
})

hidden('a view over pg_locks asks about the cluster', async () => {
  assert.is(await portOf(sql`select count(*), inet_server_port() as port from blockers`), leaderPort)
})

hidden('an operator whose function is volatile, directly, schema-qualified and through a view', async () => {
  assert.is(await portOf(sql`select 51 ### 0 as got, inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(51), 'the leader holds the lock the operator took')
  assert.is(await portOf(sql`select 52 operator(public.###) 0 as got, inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(52))
  assert.is(await portOf(sql`select got, inet_server_port() as port from pairs`), leaderPort)
  assert.ok(await leaderHolds(61))
})

hidden('a cast whose function is volatile, as :: and as CAST', async () => {
  assert.is(await portOf(sql`select 53::ticket as t, inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(53), 'the leader holds the lock the cast took')
  assert.is(await portOf(sql`select cast(54 as public.ticket) as t, inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(54))
})

hidden('an implicit cast whose function is volatile, where its type is expected', async () => {
  // no cast in the text: is_calm() takes a mood, so the text value is cast by mood_of(), which locks length(t)
  assert.is(await portOf(sql`select is_calm(t) as calm, inet_server_port() as port from (select repeat('x', 56) as t) s`), leaderPort)
  assert.ok(await leaderHolds(56))
})

hidden('a domain whose check calls a volatile function', async () => {
  assert.is(await portOf(sql`select 57::locked_int as v, inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(57), 'the leader holds the lock the check took')
})

hidden('a type whose input function is volatile, and a table that holds its values', async () => {
  assert.is(await portOf(sql`select '7'::voltype as v, inet_server_port() as port`), leaderPort)
  assert.is(await portOf(sql`select count(*), inet_server_port() as port from vol_holder`), leaderPort)
})

hidden('ordinary casts and operators, and a user operator whose function is not volatile, stay on replicas', async () => {
  const reads = [
    sql`select 1::int as v, inet_server_port() as port`,
    sql`select 'a' || 'b' as v, inet_server_port() as port`,
    sql`select 2 + 3 = 5 and 4 <> 5 and '{"k": 1}'::jsonb ->> 'k' = '1' as v, inet_server_port() as port`,
    sql`select cast('7' as int8) as v, now()::date as d, inet_server_port() as port`,
    sql`select 3 <=> 3 as v, inet_server_port() as port`,
  ]
  for (const read of reads) {
    const port = await portOf(read)
    assert.ok(replicaPorts.includes(port), `${read.strings.join('${}')} ran on ${port}`)
  }
})

hidden('an operator declared read-only through its function stays on replicas', async () => {
  const declared = connect({ ...options, readOnlyFunctions: ['public.lock_pair'] })
  try {
    await declared.refresh()
    const port = await portOf(declared`select 1 ### 0 as got, inet_server_port() as port`)
    assert.ok(replicaPorts.includes(port), `### ran on ${port}`)
  } finally {
    await declared.end()
  }
})

hidden.run()

// ---

const questions = suite('questions about the cluster are answered by the leader')

questions('pg_is_in_recovery() is false on a cluster with a writable leader', async () => {
  const [row] = await sql`select pg_is_in_recovery() as r`
  assert.is(row.r, false)
})

questions('pg_stat_replication shows both replicas', async () => {
  const rows = await sql`select application_name from pg_stat_replication`
  assert.is(rows.length, 2)
})

questions('a lock held on the leader shows in pg_locks', async () => {
  const reserved = await sql.reserve()
  try {
    await reserved`select pg_advisory_lock(77)`
    const rows = await sql`select pid from pg_locks where locktype = 'advisory' and objid = 77`
    assert.is(rows.length, 1)
  } finally {
    await reserved`select pg_advisory_unlock(77)`
    reserved.release()
  }
})

questions('SHOW transaction_read_only and current_setting say off', async () => {
  const [shown] = await sql`show transaction_read_only`
  assert.is(shown.transaction_read_only, 'off')
  const [set] = await sql`select current_setting('transaction_read_only') as v`
  assert.is(set.v, 'off')
})

questions('questions about the node that answers stay on replicas', async () => {
  const [row] = await sql`select pg_last_wal_replay_lsn() is not null as replaying, inet_server_port() as port`
  assert.ok(replicaPorts.includes(row.port))
  assert.is(row.replaying, true)
})

questions.run()

// ---

const catalog = suite('the catalog: read-only declarations and new functions')

catalog('a volatile function declared read-only stays on replicas; undeclared, it goes to the leader', async () => {
  assert.is(await portOf(sql`select lookup(1), inet_server_port() as port`), leaderPort)
  const declared = connect({ ...options, readOnlyFunctions: ['public.lookup'] })
  try {
    await declared.refresh()
    const ports = []
    for (let i = 0; i < 4; i++) ports.push(await portOf(declared`select lookup(1), inet_server_port() as port`))
    for (const port of ports) assert.ok(replicaPorts.includes(port), `lookup() ran on ${port}`)
  } finally {
    await declared.end()
  }
})

catalog('right after connect, before the catalog is in, an unknown function goes to the leader', async () => {
  const fresh = connect(options)
  try {
    assert.is(await portOf(fresh`select lookup(1), inet_server_port() as port`), leaderPort)
    assert.is(await portOf(fresh`select lock_it(21), inet_server_port() as port`), leaderPort)
    assert.ok(await leaderHolds(21))
  } finally {
    await fresh.end()
  }
})

catalog('a function created through the tag is known as soon as it exists', async () => {
  await sql`create function stamp_it() returns bool language sql as $$ select pg_try_advisory_lock(31) $$`
  await sql.leader`create function steady() returns int stable language sql as $$ select 42 $$`
  await replicated()
  // at once: unknown or volatile, it runs on the leader
  assert.is(await portOf(sql`select stamp_it(), inet_server_port() as port`), leaderPort)
  assert.ok(await leaderHolds(31))
  await sql.refresh()
  assert.is(await portOf(sql`select stamp_it(), inet_server_port() as port`), leaderPort)
  // a stable function is a read once the catalog knows it
  const [row] = await sql`select steady() as v, inet_server_port() as port`
  assert.is(row.v, 42)
  assert.ok(replicaPorts.includes(row.port), `steady() ran on ${row.port}`)
})

catalog('replacing a stable function by a volatile one through the tag moves its calls to the leader', async () => {
  assert.ok(replicaPorts.includes(await portOf(sql`select steady(), inet_server_port() as port`)))
  await sql`create or replace function steady() returns int volatile language sql as $$ select 42 $$`
  assert.is(await portOf(sql`select steady(), inet_server_port() as port`), leaderPort)
})

catalog('readOnlyFunctions is validated', () => {
  assert.throws(
    () => connect({ ...options, readOnlyFunctions: 'lookup' }),
    (error) => error instanceof ConfigError && /readOnlyFunctions/.test(error.message),
  )
  assert.throws(() => connect({ ...options, readOnlyFunctions: ['f()'] }), (error) => error instanceof ConfigError)
})

catalog.after(async () => {
  await sql.end()
  await cluster.stop()
})

catalog.run()
