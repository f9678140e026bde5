/** `connect()`: the entry point of the sql tag. */
import type postgres from 'postgres'
import { type ConnectOptions, normalizeOptions } from './options.ts'
import { Router } from './router.ts'
import { createRootSql, type NoCustomTypes, type PgfollowSql } from './tag.ts'

/**
 * A replica-aware sql tag. Read-only statements go to healthy replicas,
 * everything else to the leader; `sql.session()` adds read-your-writes and
 * monotonic reads.
 *
 * @param options a descriptor file path, or `{ leader, replicas, ...options }`;
 *   nothing reads PGFOLLOW_CLUSTER, else .pgfollow/cluster.json.
 * @example
 * const sql = connect()
 * const [user] = await sql<{ id: number; name: string }[]>`select id, name from users where id = ${id}`
 * const posts = await sql`select * from posts order by id limit ${10}`
 * await sql`insert into blogs ${sql({ url })}`
 */
export function connect<T extends Record<string, postgres.PostgresType> = NoCustomTypes>(
  options?: string | ConnectOptions<T>,
): PgfollowSql<CustomTypes<T>> {
  const router = new Router(normalizeOptions(options as ConnectOptions<Record<string, postgres.PostgresType>>))
  void router.checkRoles().catch(() => {})
  return createRootSql(router) as unknown as PgfollowSql<CustomTypes<T>>
}

/** The value types of custom `postgres.types`, as postgres() itself infers them. */
export type CustomTypes<T extends Record<string, postgres.PostgresType>> = Record<string, postgres.PostgresType> extends T ? NoCustomTypes
  : {
    [type in keyof T]: T[type] extends {
      serialize: (value: infer R) => any
      parse: (raw: any) => infer R
    } ? R
      : never
  }
