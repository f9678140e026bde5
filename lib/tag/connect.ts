/** `connect()`: the entry point of the sql tag. */
import { type ConnectOptions, normalizeOptions } from './options.ts'
import { Router } from './router.ts'
import { createRootSql, type PgfollowSql } from './tag.ts'

/**
 * A replica-aware sql tag. Read-only statements go to healthy replicas,
 * everything else to the leader; `sql.session()` adds read-your-writes and
 * monotonic reads.
 *
 * @param options a descriptor file path, or `{ leader, replicas, ...options }`;
 *   nothing reads PGFOLLOW_CLUSTER, else .pgfollow/cluster.json.
 * @example
 * const sql = connect()
 * const posts = await sql`select * from posts order by id limit ${10}`
 * await sql`insert into blogs ${sql({ url })}`
 */
export function connect(options?: string | ConnectOptions): PgfollowSql {
  const router = new Router(normalizeOptions(options))
  void router.checkRoles().catch(() => {})
  return createRootSql(router)
}
