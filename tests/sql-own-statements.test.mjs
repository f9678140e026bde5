// pgfollow's own statements (the function catalog, session positions) never
// share a connection with the user's, on a real cluster with one connection
// per pool: a statement postgres.js re-prepares after ALTER TABLE gets its own
// rows, and a session's reserved connection learns its position without a
// second connection from the pool it holds.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { connect } from 'pgfollow'
import { startCluster } from './helpers/cluster.mjs'
import { within } from './helpers/wait.mjs'

const cluster = await startCluster({ replicas: 1, migrate: false })
const replicaPort = cluster.ports[1]
// One connection per pool: whatever pgfollow ran on the user's pool would share it with the user's statements.
const sql = connect({ ...cluster.descriptor, monitorInterval: 200, postgres: { max: 1, onnotice: () => {} } })

const own = suite("pgfollow's own statements never share the user's connections")

own.after(async () => {
  await sql.end({ timeout: 1 })
  await cluster.stop()
})

own('a statement re-prepared after ALTER TABLE gets its own rows, not the catalog read that DDL started', async () => {
  // The ALTER makes the catalog be read again while postgres.js re-prepares the insert (a stale plan,
  // transformAssignedExpr) in two steps; on the same connection that read once went in between.
  const wrong = []
  for (let round = 0; round < 15; round++) {
    const table = `retyped_${round}`
    const insert = () => sql`insert into ${sql(table)} (name) values (${'1'}) returning name`
    await sql`create table ${sql(table)} (name text)`
    await insert()
    await sql`alter table ${sql(table)} alter column name type int using name::integer`
    const rows = await insert()
    if (rows.length !== 1 || rows[0].name !== 1) wrong.push(`round ${round}: ${JSON.stringify(rows).slice(0, 80)}`)
    await sql`drop table ${sql(table)}`
  }
  assert.equal(wrong, [], 'the insert resolved with rows that are not its own')
})

own('a read on a reserved connection of a session, with max: 1, answers from a replica', async () => {
  const reserved = await sql.session().reserve()
  try {
    // The session's position after each statement was asked on the pool whose only connection this holds.
    for (let i = 0; i < 3; i++) {
      const [row] = await within(reserved`select array[1, 2, 3] as x, inet_server_port() as port`, 5_000, 'the reserved read')
      assert.is(row.x.join(''), '123')
      assert.is(row.port, replicaPort)
    }
  } finally {
    reserved.release()
  }
})

own.run()
