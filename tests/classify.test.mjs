import { suite } from 'uvu'
import * as assert from 'uvu/assert'

// Node runs the compiled file (npm run build first), Deno the TypeScript source.
const lib = typeof Deno !== 'undefined' ? '../lib/tag/' : '../dist/tag/'
const ext = typeof Deno !== 'undefined' ? '.ts' : '.js'
const { classifyStatement, COMMON_FUNCTIONS, COMMON_OPERATORS } = await import(`${lib}classify${ext}`)
const { Router } = await import(`${lib}router${ext}`)
const { normalizeOptions } = await import(`${lib}options${ext}`)

const R = 'read'
const W = 'write'

// [statement text, expected kind]
const statements = [
  // plain reads
  ['select 1', R],
  ['SELECT * FROM posts WHERE id = $1', R],
  ['select 1;', R],
  ['select 1 ;  ;\n -- done\n', R],
  ['  \n\tselect now()', R],
  ['(select 1)', R],
  ['((select 1) union all (select 2)) order by 1', R],
  ['select * from (select * from (select 1) a) b', R],
  ['table posts', R],
  ['TABLE public.posts', R],
  ['values (1),(2)', R],
  ['(values (1))', R],
  ['with x as (select 1) select * from x', R],
  ['WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t WHERE n < 9) SELECT sum(n) FROM t', R],
  ['with x as materialized (select 1) select * from x', R],
  ['show work_mem', R],
  ['SHOW ALL', R],
  ['select p.*, c.body from posts p join comments c on c.post_id = p.id order by p.id limit $1 offset $2', R],
  ['select count(*) from t where x = any($1::int[])', R],
  ['select pg_sleep(0.1)', R],
  ['select lo_get($1)', R],
  ['select current_setting($1)', R],
  ['select substring(body from 1 for 10) from posts', R],
  ['select * from xmltable($1 passing $2 columns n for ordinality, v text)', R],
  ['select 1.5e-3, .5, 1_000', R],
  ['select $1, $2, $10', R],
  ['select a$b from t', R],
  ['select t.update, t.delete from t', R],
  ['select x as insert from t', R],
  // keywords hidden in strings, identifiers and comments
  ["select 'delete'", R],
  ["select 'for update' from t", R],
  ["select 'it''s; delete from t'", R],
  ['select "for update" from t', R],
  ['select "into", "insert" from t', R],
  ['SELECT "NextVal" FROM "Posts"', R],
  ['select "a""; delete from t; --" from t', R],
  ["select E'\\'; delete from t; --'", R],
  ["select e'it\\'s', 'x'", R],
  ['select $$ ; delete from t; $$', R],
  ['select $tag$ $$ ; insert into t $$ $tag$', R],
  ['select $a$b$a$ as v', R],
  ['select 1 -- ; delete from t', R],
  ['select 1 /* ; delete from t */', R],
  ['select 1 /* outer /* inner */ ; delete from t */', R],
  ['select /* for update */ * from t', R],
  ['select * from t -- for update', R],
  ["select U&'d\\0061t\\+000061' as data", R],
  // explain
  ['explain select 1', R],
  ['EXPLAIN VERBOSE SELECT 1', R],
  ['explain analyze select 1', R],
  ['explain (analyze, buffers) select * from t', R],
  ['explain delete from t', R],
  ['explain (costs off) insert into t values (1)', R],
  ['explain (analyze false) delete from t', R],
  ['explain (analyze off, verbose) update t set x = 1', R],
  ['explain (select 1)', R],
  ['explain analyze delete from t', W],
  ['EXPLAIN ANALYSE VERBOSE UPDATE t SET x = 1', W],
  ['explain (analyze) insert into t values (1)', W],
  ['explain (verbose, analyze true) insert into t values (1)', W],
  ['explain (analyze 1) merge into t using s on t.id = s.id when matched then delete', W],
  ['explain analyze select nextval($1)', W],
  ['explain analyze select * from t for update', W],
  ['explain execute stmt(1)', W],
  // reads that are not: locks, SELECT INTO, data-modifying CTEs, write functions
  ['select * from t for update', W],
  ['select * from t for update skip locked', W],
  ['select * from t where id = $1 for no key update nowait', W],
  ['select * from t for share', W],
  ['select * from t for key share of t', W],
  ['select * from (select * from t for update) s', W],
  ['select * from t where id = 1for update', W],
  ['Select * From T For Update', W],
  ['SELECT * FROM t FOR KEY SHARE', W],
  ["SELECT NextVal('s')", W],
  ['select * into newtable from t', W],
  ['with x as (insert into t values (1) returning *) select * from x', W],
  ['WITH d AS (DELETE FROM t WHERE id = $1 RETURNING id) SELECT count(*) FROM d', W],
  ['with u as materialized (update t set x = 1 returning *) select * from u', W],
  ['with x as (select 1) insert into t select * from x', W],
  ['with m as (merge into t using s on true when matched then do nothing returning *) select * from m', W],
  ["select nextval('s')", W],
  ["select pg_catalog.nextval('s')", W],
  ['select "nextval"($1)', W],
  ['select "pg_catalog"."setval"($1, 10)', W],
  ["select currval('s')", W],
  ['select lastval()', W],
  ["select id, nextval /* c */ ('s') from t", W],
  ['select pg_advisory_lock(1)', W],
  ['select pg_try_advisory_lock($1)', W],
  ['select pg_advisory_xact_lock_shared(1)', W],
  ['select pg_advisory_unlock_all()', W],
  ["select set_config('a','b',false)", W],
  ['select pg_notify($1, $2)', W],
  ['select txid_current()', W],
  ['select pg_current_xact_id()', W],
  ['select lo_create(0)', W],
  ["select lo_import('/tmp/x')", W],
  ['select pg_current_wal_lsn()', W],
  ['select * from t where id = (select nextval($1))', W],
  ['values (nextval($1))', W],
  ['select * from dblink($1, $2) as r(x int)', W],
  // more than one statement
  ['select 1; delete from t', W],
  ['select 1; select 2', W],
  ['select 1; /* comment */ select 2', W],
  ["select '\\'; delete from t; --'", W],
  // statements that always write
  ['insert into t values ($1)', W],
  ['UPDATE t SET x = $1 WHERE id = $2', W],
  ['delete from t', W],
  ['merge into t using s on t.id = s.id when not matched then insert values (s.id)', W],
  ['copy t to stdout', W],
  ['copy (select 1) to stdout', W],
  ['do $$ begin end $$', W],
  ['call p()', W],
  ['set work_mem = $1', W],
  ['SET LOCAL statement_timeout = 0', W],
  ['reset all', W],
  ['listen chan', W],
  ['unlisten *', W],
  ["notify chan, 'x'", W],
  ['begin', W],
  ['start transaction read only', W],
  ['commit', W],
  ['prepare q as select 1', W],
  ['execute q', W],
  ['declare c cursor for select 1', W],
  ['lock table t', W],
  ['vacuum t', W],
  ['analyze t', W],
  ['refresh materialized view v', W],
  ['create table t (id int)', W],
  ['alter table t add column x int', W],
  ['drop table t', W],
  ['truncate t', W],
  ['grant select on t to u', W],
  ['revoke select on t from u', W],
  ["comment on table t is 'x'", W],
  ['(insert into t values (1))', W],
  // nothing, or nothing we understand
  ['', W],
  ['   ', W],
  [';', W],
  ['-- only a comment', W],
  ['/* only a comment */', W],
  ['frobnicate the database', W],
  ['$1', W],
  ["select 'unterminated", W],
  ['select "unterminated', W],
  ['select $$ unterminated', W],
  ['select 1 /* unterminated /* nested */', W],
  // names spelled with Unicode escapes are the names they spell
  ['select U&"pg\\005fadvisory_lock"(7)', W],
  ['select u&"PG\\005FADVISORY\\005FLOCK"(7)', W],
  ['select U&"pg\\+00005fadvisory_lock"(7)', W],
  ['select U&"pg!005fadvisory_lock" UESCAPE \'!\'(7)', W],
  ['select U&"set!005fconfig"uescape\'!\'($1, $2, false)', W],
  ['select U&"\\0061bc", U&"d\\0061t\\+000061" from t', R],
  ["select U&'pg\\005fadvisory_lock(1)' as text_not_a_call", R],
  ['select U&"bad\\zz"', W],
  ['select U&"bad\\+11ffff"', W],
  ['select U&"unterminated', W],
  // identifier fragments render as quoted names: sql('pg_advisory_lock')
  ['select "pg_advisory_lock"(7)', W],
  ['select "PG_TRY_ADVISORY_LOCK"(7)', W],
  ['select "pg_catalog"."set_config"($1, $2, false)', W],
  // more built-ins that write, lock or hold session state
  ['select setseed(0.5)', W],
  ['select brin_summarize_range($1, 0)', W],
  ['select gin_clean_pending_list($1)', W],
  ["select query_to_xml('delete from t returning 1', true, true, '')", W],
  ['select loread($1, 10)', W],
  // questions about the cluster: the leader answers them
  ['select pg_is_in_recovery()', W],
  ['select * from pg_stat_replication', W],
  ['select application_name, state from pg_catalog.pg_stat_replication', W],
  ['select * from pg_replication_slots', W],
  ['select count(*) from pg_locks where not granted', W],
  ['select pid, query from pg_stat_activity', W],
  ['select * from pg_stat_progress_vacuum', W],
  ['select * from pg_prepared_xacts', W],
  ['select pg_blocking_pids($1)', W],
  ['select pg_xact_status($1)', W],
  ['select txid_current_snapshot()', W],
  ['show transaction_read_only', W],
  ['SHOW In_Hot_Standby', W],
  ["select current_setting('transaction_read_only')", W],
  ["select current_setting('TRANSACTION_READ_ONLY') as ro", W],
  // ... and questions about the node that answers stay where they land
  ['show work_mem', R],
  ["select current_setting('work_mem')", R],
  ['select pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()', R],
  ['select pg_database_size(current_database())', R],
]

const table = suite('classifyStatement table (the text alone)')

for (const [text, expected] of statements) {
  table(`${JSON.stringify(text)} is a ${expected}`, () => {
    const { kind, reason } = classifyStatement(text)
    assert.is(kind, expected, `${JSON.stringify(text)} classified ${kind} (${reason}), expected ${expected}`)
    assert.type(reason, 'string')
    assert.ok(reason.length > 0, 'every classification has a reason')
  })
}

table.run()

// ---

// What a loaded catalog says, in miniature: lock_it and stamp are volatile,
// locking_view calls one, lookup is a known function that is not volatile;
// operator ### calls a volatile function and <=> a stable one; casting to
// ticket calls a volatile function, and so does reading or parsing voltype,
// whose values the table holder holds.
const known = {
  functions: new Set([...COMMON_FUNCTIONS, 'lock_it', 'stamp', 'lookup', 'system']),
  leaderNames: new Map([
    ['lock_it', 'lock_it() is volatile'],
    ['stamp', 'stamp() is volatile'],
    ['locking_view', 'reading locking_view calls pg_try_advisory_lock()'],
    ['ticket', 'a cast to ticket calls take_ticket()'],
    ['voltype', 'reading or writing a value of type voltype calls voltype_in()'],
    ['holder', 'holder holds values of voltype'],
  ]),
  operators: new Set([...COMMON_OPERATORS, '###', '<=>']),
  leaderOperators: new Map([['###', 'operator ### calls lock_pair()']]),
}
const beforeLoad = { functions: COMMON_FUNCTIONS, leaderNames: new Map(), operators: COMMON_OPERATORS }

// [statement text, expected kind, knowledge]
const withCatalog = [
  ['select lock_it(1)', W, known],
  ['select public.lock_it($1), x from t', W, known],
  ['select "Lock_It"(1)', W, known],
  ['select t.stamp from t', W, known], // attribute notation calls stamp(t)
  ['select * from locking_view', W, known],
  ['select got from public.locking_view where true', W, known],
  ['with v as (select * from locking_view) select * from v', W, known],
  ['explain analyze select lock_it(1)', W, known],
  ['explain select lock_it(1)', R, known],
  ['select lookup(1)', R, known],
  ['select count(*), lower(title) from posts', R, known],
  ['select unknown_fn(1)', W, known],
  ['select s.unknown_fn(1) from t', W, known],
  ['select x from t where y = unknown_fn($1)', W, known],
  // column lists, keywords and type modifiers are not calls of unknown functions
  ['select * from generate_series(1, 3) as g(x)', R, known],
  ['select * from generate_series(1, 3) g(x)', R, known],
  ['select * from (values (1, 2)) v(a, b)', R, known],
  ['select * from t tt(a, b)', R, known],
  ['select * from "T" tt(a)', R, known],
  ['with c(a) as (select 1) select * from c', R, known],
  ['with c(a) as materialized (select 1), d(b) as not materialized (select 2) select * from c, d', R, known],
  ['select x::varchar(10), cast(y as numeric(10, 2)), z::char(3) from t', R, known],
  ['select coalesce(a, b), nullif(a, 0), greatest(a, b), exists (select 1), a in (1, 2) from t', R, known],
  ['select count(*) filter (where x > 0) over (partition by y order by z) from t', R, known],
  ['select percentile_cont(0.5) within group (order by x) from t', R, known],
  ['select * from t tablesample system (10) repeatable (1)', R, known],
  ['select substring(a from 1 for 2), trim(both from a), extract(epoch from now()) from t', R, known],
  ['select row(1, 2), array(select 1), current_timestamp(3)', R, known],
  ['select a from t where (a, b) in (select 1, 2)', R, known],
  // operators, casts and types that call a volatile function without naming it
  ['select 1 ### 2', W, known],
  ['select a###b from t', W, known],
  ['select * from t where a ### $1 or b = 1', W, known],
  ['select 1 operator(public.###) 2', W, known],
  ['select x from t where y in (select 1 ### 2)', W, known],
  ['select 5::ticket', W, known],
  ['select cast(x as public.ticket) from t', W, known],
  ["select ticket '(1)'", W, known],
  ['select ticket(5)', W, known],
  ['select 5::"TICKET"', W, known],
  ["select '7'::voltype", W, known],
  ["select '{1}'::voltype[]", W, known],
  ['select v from holder', W, known],
  ['select 1 <=> 2', R, known], // a known operator whose function is not volatile
  ['select 1::int, 2::int8, x::text from t', R, known],
  ["select 'a' || 'b', a -> 'k', a ->> 'k', a #> '{k}', a @> b, a <@ b from t", R, known],
  ['select a <> b, a != b, a <= b, a >= b, -a, a+-1, a*2/3 % 4, |/ 9, a ~~ b from t', R, known],
  ['select f(a => 1)', R, { ...known, functions: new Set([...known.functions, 'f']) }], // `=>` names an argument
  ['select a=-1, a--comment\n from t', R, known],
  ['select \'a ### b\', "###", $$ ### $$ from t', R, known], // inside strings and names
  ['select a #@# b from t', W, known], // an operator created since the catalog was read
  // before the catalog is in, only the common built-ins are known
  ['select 1 ### 2', W, beforeLoad],
  ["select 1::int, a->>'k', a || b from t", R, beforeLoad],
  ['select count(*), lower(title) from posts', R, beforeLoad],
  ['select lookup(1)', W, beforeLoad],
  ['select lock_it(1)', W, beforeLoad],
]

const catalogTable = suite('classifyStatement with the catalog')

for (const [text, expected, knowledge] of withCatalog) {
  const when = knowledge === beforeLoad ? 'before the catalog is in' : 'with the catalog'
  catalogTable(`${JSON.stringify(text)} is a ${expected} ${when}`, () => {
    const { kind, reason } = classifyStatement(text, knowledge)
    assert.is(kind, expected, `${JSON.stringify(text)} classified ${kind} (${reason}), expected ${expected}`)
  })
}

catalogTable('a call the catalog does not know names the function, so the catalog is read again', () => {
  assert.is(classifyStatement('select unknown_fn(1)', known).unknownFunction, 'unknown_fn')
  assert.is(classifyStatement('select lookup(1)', known).unknownFunction, undefined)
  assert.is(classifyStatement('select unknown_fn(1)').kind, R, 'without knowledge only the text counts')
  assert.is(classifyStatement('select 1 #@# 2', known).unknownFunction, 'operator #@#')
  assert.is(classifyStatement('select 1 ### 2').kind, R, 'without knowledge an operator is opaque')
})

catalogTable('statements that may change functions, views or policies say so', () => {
  const changes = [
    'create function f() returns int language sql as $$ select 1 $$',
    'CREATE OR REPLACE VIEW v AS SELECT 1',
    'drop function if exists f(int)',
    'alter function f() volatile',
    'alter table v rename to w',
    'create policy p on t using (f())',
    'create extension pgcrypto',
    'create operator ### (procedure = f, leftarg = int, rightarg = int)',
    'create cast (int as ticket) with function take_ticket(int)',
    'create type voltype (input = voltype_in, output = voltype_out)',
    'create domain locked_int as int check (f(value))',
    'alter domain locked_int add check (g(value))',
    'do $$ begin end $$',
    'create table t (id int); create function f() returns int language sql as $$ select 1 $$',
  ]
  for (const text of changes) assert.is(classifyStatement(text).changesCatalog, true, text)
  const others = ['create temp table t (id int)', 'create index on t (id)', 'insert into t values (1)', 'select 1; select 2', 'drop table t']
  for (const text of others) assert.not.ok(classifyStatement(text).changesCatalog, text)
})

catalogTable.run()

// ---

const rendering = suite('statement text as the router classifies it')

// No server needed: the router renders and classifies without connecting.
const router = new Router(normalizeOptions({ leader: 'postgres://u:p@127.0.0.1:9/x', replicas: [], connectTimeout: 200 }))
const tag = router.factory

rendering('identifiers render as the quoted names they are, values as placeholders', () => {
  assert.is(router.statementText(tag`select ${tag('pg_advisory_lock')}(${7})`), 'select "pg_advisory_lock"($1)')
  assert.is(router.statementText(tag`select ${tag(['a', 'pg_advisory_lock'])} from t`), 'select "a","pg_advisory_lock" from t')
  assert.is(router.statementText(tag`select ${tag({ n: 1 })}`), 'select $1 as "n"')
  assert.is(router.statementText(tag`select * from ${tag('t')} where ${tag`x = ${1}`}`), 'select * from "t" where x = $1')
})

rendering('a call through an identifier goes to the leader; the same site with a harmless name does not', () => {
  const site = (name) => tag`select ${tag(name)}(1)`
  assert.is(router.kindOf(site('pg_advisory_lock')), W)
  assert.is(router.kindOf(site('abs')), R)
  assert.is(router.kindOf(site('pg_try_advisory_lock')), W)
  assert.is(router.kindOf(tag`insert into t ${tag({ a: 1 })}`), W)
})

rendering.after(() => router.end({ timeout: 0 }))

rendering.run()

// ---

const reasons = suite('classifyStatement reasons')

reasons('name the rule that fired', () => {
  assert.equal(classifyStatement('select 1'), { kind: 'read', reason: 'SELECT' })
  assert.equal(classifyStatement('select * from t for update skip locked'), { kind: 'write', reason: 'FOR UPDATE locks rows' })
  assert.equal(classifyStatement('select * from t for no key update'), { kind: 'write', reason: 'FOR NO KEY UPDATE locks rows' })
  assert.equal(classifyStatement('with x as (insert into t default values returning *) select * from x'), {
    kind: 'write',
    reason: 'data-modifying CTE',
  })
  assert.equal(classifyStatement('select 1; delete from t'), { kind: 'write', reason: 'multiple statements' })
  assert.equal(classifyStatement('frobnicate'), { kind: 'write', reason: 'unknown statement' })
  assert.equal(classifyStatement(''), { kind: 'write', reason: 'empty statement' })
  assert.equal(classifyStatement('select * into x from t'), { kind: 'write', reason: 'SELECT INTO creates a table' })
  assert.equal(classifyStatement("select nextval('s')"), { kind: 'write', reason: 'nextval advances a sequence' })
  assert.equal(classifyStatement('select pg_advisory_lock(1)'), { kind: 'write', reason: 'advisory locks live on one node' })
  assert.is(classifyStatement('explain analyze delete from t').reason, 'EXPLAIN ANALYZE executes it: DELETE')
})

reasons('the table covers at least 80 statements', () => {
  assert.ok(statements.length >= 80, `only ${statements.length} rows`)
})

reasons.run()

// ---

const speed = suite('classifyStatement speed')

speed('classifies 10k statements of about 300 characters', () => {
  const text = 'select p.id, p.title, p.body, c.id as comment_id, c.body as comment_body /* page of posts */ ' +
    "from posts p left join comments c on c.post_id = p.id where p.blog_id = $1 and p.title <> 'draft; for update' " +
    'and p.created_at > $2 and p.published order by p.id desc, c.id limit $3 offset $4 -- paged posts'
  assert.ok(text.length >= 290 && text.length <= 320, `statement is ${text.length} characters`)
  assert.is(classifyStatement(text).kind, 'read')
  // warm the JIT first so the figure is the steady state the tag will see
  for (let i = 0; i < 1_000; i++) classifyStatement(text)
  const n = 10_000
  let reads = 0
  const start = performance.now()
  for (let i = 0; i < n; i++) if (classifyStatement(text).kind === 'read') reads++
  const elapsed = performance.now() - start
  assert.is(reads, n)
  console.log(`  classifyStatement: ${((elapsed * 1000) / n).toFixed(2)} µs per ${text.length}-character statement`)
})

speed.run()
