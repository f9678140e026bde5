/**
 * The replication topology, in one place: server settings, names of roles,
 * slots and application_names, the pg_hba lines and the standby settings.
 * The local cluster (lib/cluster) and the Pulumi program (infra/) both build
 * from these, so a setting cannot drift between the two ways to run a cluster.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'

/** The role replicas stream as: LOGIN REPLICATION and nothing more. */
export const REPLICATOR_ROLE = 'replicator'

/** Synchronous replication modes; `off` is PostgreSQL's asynchronous default. */
export type SynchronousMode = 'off' | 'any' | 'first'
export const SYNCHRONOUS_MODES: readonly SynchronousMode[] = ['off', 'any', 'first']

/** Stable node names: `leader`, `replica1`, `replica2`, ... */
export function replicaName(index: number): string {
  return `replica${index + 1}`
}

/** Physical slot a replica streams from; slot names allow [a-z0-9_] only. */
export function slotName(nodeName: string): string {
  return `pgfollow_${nodeName.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`
}

export interface ServerSettingsOptions {
  /** listen_addresses: loopback for the local cluster, `*` inside a container network. */
  listen: string
  /** application_names of the replicas, for synchronous_standby_names. */
  replicaNames: string[]
  synchronous?: SynchronousMode
  /** Major version of the server; settings newer than it are left out. */
  major?: number
}

/**
 * Settings every node of the cluster runs with. A replica is a copy of the
 * leader's data dir, so it inherits them; hot_standby_feedback only matters
 * on replicas and is harmless on the leader, which keeps one file for all.
 */
export function serverSettings(options: ServerSettingsOptions): Record<string, string> {
  const { listen, replicaNames, synchronous = 'off', major = 18 } = options
  const settings: Record<string, string> = {
    listen_addresses: listen,
    password_encryption: 'scram-sha-256',
    wal_level: 'replica',
    // Room for every replica plus a base backup or two in flight.
    max_wal_senders: String(Math.max(10, replicaNames.length * 2 + 2)),
    max_replication_slots: String(Math.max(10, replicaNames.length * 2 + 2)),
    hot_standby: 'on',
    // Replicas tell the leader which rows their queries still need, so long
    // reads are not cancelled by vacuum on the leader (recovery conflicts).
    hot_standby_feedback: 'on',
    // A dead replica's slot would otherwise keep WAL forever and fill the disk.
    max_slot_wal_keep_size: '1GB',
    // pg_rewind needs hint bits in WAL to bring a fenced old leader back.
    wal_log_hints: 'on',
    wal_sender_timeout: '10s',
    wal_receiver_status_interval: '1s',
  }
  // PostgreSQL 18 can also drop slots nobody used for a long time.
  if (major >= 18) settings.idle_replication_slot_timeout = '1d'
  const standbyNames = synchronousStandbyNames(synchronous, replicaNames)
  if (standbyNames) {
    settings.synchronous_standby_names = standbyNames
    settings.synchronous_commit = 'on'
  }
  return settings
}

/** `ANY 1 ("replica1", "replica2")` style value, or '' when asynchronous. */
export function synchronousStandbyNames(mode: SynchronousMode, replicaNames: string[]): string {
  if (!SYNCHRONOUS_MODES.includes(mode)) {
    throw new TypeError(`Unknown synchronous mode "${mode}": use one of ${SYNCHRONOUS_MODES.join(', ')}`)
  }
  if (mode === 'off' || replicaNames.length === 0) return ''
  const names = replicaNames.map((name) => `"${name}"`).join(', ')
  return `${mode.toUpperCase()} 1 (${names})`
}

/** `-c key=value` pairs, for a server started by a container command line. */
export function toServerFlags(settings: Record<string, string>): string[] {
  return Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`])
}

/** postgresql.conf lines, values quoted as the file format wants. */
export function toConfLines(settings: Record<string, string>): string {
  return Object.entries(settings)
    .map(([key, value]) => `${key} = '${value.replace(/'/g, "''")}'`)
    .join('\n') + '\n'
}

/**
 * pg_hba.conf: scram everywhere, no `trust`. The replicator may only open
 * replication connections; it is rejected from every database, so it can
 * never read a table even if someone grants it one.
 */
export function hbaLines(network: string): string {
  return [
    '# TYPE  DATABASE     USER        ADDRESS      METHOD',
    `host    replication  ${REPLICATOR_ROLE}  ${network}  scram-sha-256`,
    `host    all          ${REPLICATOR_ROLE}  ${network}  reject`,
    `host    all          all         ${network}  scram-sha-256`,
    '',
  ].join('\n')
}

export interface StandbyOptions {
  leaderHost: string
  leaderPort: number
  replicatorPassword: string
  applicationName: string
}

/** primary_conninfo in libpq keyword form, values quoted. */
export function primaryConninfo(options: StandbyOptions): string {
  const quote = (value: string | number) => `'${String(value).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
  return [
    `host=${quote(options.leaderHost)}`,
    `port=${quote(options.leaderPort)}`,
    `user=${quote(REPLICATOR_ROLE)}`,
    `password=${quote(options.replicatorPassword)}`,
    `application_name=${quote(options.applicationName)}`,
  ].join(' ')
}

/** Settings that make a data dir a streaming standby of the leader. */
export function standbySettings(options: StandbyOptions): Record<string, string> {
  return {
    primary_conninfo: primaryConninfo(options),
    primary_slot_name: slotName(options.applicationName),
  }
}

/** A password safe in URLs and conninfo strings: 24 random bytes, base64url. */
export function generatePassword(): string {
  return randomBytes(24).toString('base64url')
}

/**
 * SCRAM-SHA-256 verifier of a password, as PostgreSQL stores it. Sending the
 * verifier instead of the password keeps the plain password out of the
 * server's statement log and pg_stat_activity.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16)
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256')
  const clientKey = createHmac('sha256', salted).update('Client Key').digest()
  const storedKey = createHash('sha256').update(clientKey).digest()
  const serverKey = createHmac('sha256', salted).update('Server Key').digest()
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`
}
