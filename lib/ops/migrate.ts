/**
 * Migrations on a replicated cluster: applied on the leader only, each file
 * in its own transaction, recorded in a ledger with its checksum, under an
 * advisory lock so two runners cannot interleave, and finished only when
 * every replica has replayed them, so no reader meets a missing table.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'
import { ConfigError, redactUrl, ReplayTimeoutError } from '../tag/errors.ts'
import { parseLsn } from '../tag/lsn.ts'
import { sqlPath, sqlText } from './sqlfiles.ts'

/** Migration files are `NNN_name.sql`, applied in name order. */
const MIGRATION_FILE = /^\d+_[\w.-]+\.sql$/

/** One key for every runner of every process: hashtext of a fixed name. */
const LOCK_NAME = 'pgfollow.migrate'

export interface MigrateOptions {
  leader: string
  replicas?: string[]
  /** Folder of migration files; default sql/migrations. */
  directory?: string
  /** How long to wait for replicas to replay what was applied. */
  replayTimeoutMs?: number
  onProgress?: (message: string) => void
}

export interface MigrateResult {
  applied: string[]
  alreadyApplied: string[]
}

interface MigrationFile {
  name: string
  text: string
  checksum: string
}

/** Reads the migration files in order, with their sha256. */
export function readMigrations(directory: string = sqlPath('migrations')): MigrationFile[] {
  return readdirSync(directory)
    .filter((name) => MIGRATION_FILE.test(name))
    .sort()
    .map((name) => {
      const text = readFileSync(join(directory, name), 'utf8')
      return { name, text, checksum: createHash('sha256').update(text).digest('hex') }
    })
}

/** Applies the pending migrations; see the module comment for the guarantees. */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const { leader, replicas = [], replayTimeoutMs = 30_000, onProgress = () => {} } = options
  const files = readMigrations(options.directory)
  // One connection: the advisory lock is held by a session.
  const session = postgres(leader, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  const result: MigrateResult = { applied: [], alreadyApplied: [] }
  try {
    await session`select pg_advisory_lock(hashtext(${LOCK_NAME}))`
    try {
      await session.unsafe(sqlText('queries/migration-ledger.sql'))
      const rows = await session`select name, checksum from pgfollow_migrations`
      const ledger = new Map(rows.map((row) => [row.name as string, row.checksum as string]))
      for (const file of files) {
        const recorded = ledger.get(file.name)
        if (recorded !== undefined) {
          if (recorded !== file.checksum) {
            throw new ConfigError(
              `Migration ${file.name} was changed after it was applied (checksum ${recorded.slice(0, 12)} in the ledger, ` +
                `${file.checksum.slice(0, 12)} on disk). Applied migrations are history: restore the file and put the change in a new one.`,
            )
          }
          result.alreadyApplied.push(file.name)
          continue
        }
        onProgress(`applying ${file.name}`)
        await applyOne(session, file)
        result.applied.push(file.name)
      }
    } finally {
      await session`select pg_advisory_unlock(hashtext(${LOCK_NAME}))`.catch(() => {})
    }
    if (result.applied.length > 0 && replicas.length > 0) {
      const [{ lsn }] = await session`select pg_current_wal_lsn()::text as lsn`
      onProgress(`waiting for ${replicas.length} replica(s) to replay ${lsn}`)
      await waitForReplay(replicas, parseLsn(lsn)!, replayTimeoutMs)
    }
  } finally {
    await session.end({ timeout: 5 })
  }
  return result
}

/** The file and its ledger row commit together or not at all. */
async function applyOne(session: postgres.Sql, file: MigrationFile): Promise<void> {
  await session.unsafe('begin')
  try {
    await session.unsafe(file.text)
    await session`insert into pgfollow_migrations (name, checksum) values (${file.name}, ${file.checksum})`
    await session.unsafe('commit')
  } catch (error) {
    await session.unsafe('rollback').catch(() => {})
    throw new ConfigError(`Migration ${file.name} failed and was rolled back: ${(error as Error).message}`, { cause: error })
  }
}

/** Polls each replica until its replay position reaches `lsn`. */
export async function waitForReplay(replicas: string[], lsn: bigint, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  await Promise.all(
    replicas.map(async (url) => {
      const replica = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 })
      try {
        for (;;) {
          const [{ replay }] = await replica`select pg_last_wal_replay_lsn()::text as replay`
          const position = parseLsn(replay)
          if (position != null && position >= lsn) return
          if (Date.now() > deadline) {
            throw new ReplayTimeoutError(
              `Replica ${redactUrl(url)} has not replayed the migrations within ${timeoutMs} ms (at ${replay ?? 'nothing'}). ` +
                'The migrations are applied on the leader; check the replica with `npx zx scripts/cluster.mjs status`.',
            )
          }
          await new Promise((r) => setTimeout(r, 20))
        }
      } finally {
        await replica.end({ timeout: 5 })
      }
    }),
  )
}
