/**
 * The replication topology, in one place: the descriptor's shape, node names,
 * ports, URLs, server settings, names of roles, slots and application_names,
 * the pg_hba lines and the standby settings. The local cluster (lib/cluster),
 * the Docker cluster and the Pulumi program (infra/) all build from these, so
 * a setting cannot drift between the ways to run a cluster.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import { ConfigError } from './tag/errors.ts'

/** What every cluster writes and `connect()` reads; declared by the tag, which reads it. */
export type { ClusterDescriptor } from './tag/descriptor.ts'

/** The database the descriptor's URLs name, on every kind of cluster. */
export const DATABASE = 'pgfollow'

/** The superuser the descriptor's URLs log in as, on every kind of cluster (the postgres images' own). */
export const SUPERUSER = 'postgres'

/** The first node's name; replicas are named by replicaName(). */
export const LEADER_NAME = 'leader'

/** The proof of concept's ports: leader 5432, replicas 5480 and 5490, then every REPLICA_PORT_STEP. */
export const DEFAULT_PORTS: readonly number[] = [5432, 5480, 5490]
export const REPLICA_PORT_STEP = 10

/**
 * Ports a cluster may use. Below 1024 a port needs root to bind, and the
 * servers run as an unprivileged user (locally and in the postgres image).
 */
export const PORT_RANGE: { readonly min: number; readonly max: number } = { min: 1024, max: 65535 }

/** The role replicas stream as: LOGIN REPLICATION and nothing more. */
export const REPLICATOR_ROLE = 'replicator'

/** Synchronous replication modes; `off` is PostgreSQL's asynchronous default. */
export type SynchronousMode = 'off' | 'any' | 'first'
export const SYNCHRONOUS_MODES: readonly SynchronousMode[] = ['off', 'any', 'first']

/** Stable node names: `leader`, `replica1`, `replica2`, ... */
export function replicaName(index: number): string {
  return `replica${index + 1}`
}

/** `leader`, then one name per replica. */
export function nodeNames(replicas: number): string[] {
  return [LEADER_NAME, ...Array.from({ length: replicas }, (_, i) => replicaName(i))]
}

/** The default port of every node: DEFAULT_PORTS, continued REPLICA_PORT_STEP apart. */
export function defaultPorts(replicas: number): number[] {
  return Array.from(
    { length: replicas + 1 },
    (_, i) => DEFAULT_PORTS[i] ?? DEFAULT_PORTS[DEFAULT_PORTS.length - 1] + REPLICA_PORT_STEP * (i - DEFAULT_PORTS.length + 1),
  )
}

/**
 * A port from a flag or a config key (`what` names it in the error). Digit
 * strings count: `pulumi config set --path 'replicaPorts[0]' 5480` stores one.
 */
export function parsePort(value: unknown, what: string): number {
  const port = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value
  if (typeof port !== 'number' || !Number.isInteger(port) || port < PORT_RANGE.min || port > PORT_RANGE.max) {
    throw new ConfigError(
      `${what} must be a port number from ${PORT_RANGE.min} to ${PORT_RANGE.max} (got ${
        JSON.stringify(value)
      }); lower ports need root, which the servers do not run as.`,
    )
  }
  return port
}

/** A synchronous mode from a flag or a config key (`what` names it in the error). */
export function parseSynchronousMode(value: unknown, what: string): SynchronousMode {
  if (!SYNCHRONOUS_MODES.includes(value as SynchronousMode)) {
    throw new ConfigError(`${what} is ${JSON.stringify(value)}: use one of ${SYNCHRONOUS_MODES.join(', ')}.`)
  }
  return value as SynchronousMode
}

export interface PostgresUrlParts {
  user: string
  password: string
  host: string
  port: number
  database?: string
}

/** `postgres://user:password@host:port/database`, the descriptor's URL form; database defaults to DATABASE. */
export function postgresUrl(parts: PostgresUrlParts): string {
  const { user, password, host, port, database = DATABASE } = parts
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(database)}`
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
  parseSynchronousMode(mode, 'the synchronous mode')
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

// ---------------------------------------------------------------------------
// Patroni: the configuration of one node, in one function. The local HA
// cluster (lib/cluster/ha) writes it to each node's patroni.yml, and the
// Pulumi program (infra/patroni.ts) gives the same to each container, so the
// two cannot drift. Pure: no file, process or network access.

/** Failover timing: Patroni's defaults (ttl 30, loop_wait 10) take half a minute; these fail over in ~5 s. */
export const HA_TIMING = { ttl: 5, loopWait: 1, retryTimeout: 2 } as const

/** The member tag that says where clients reach a node (lib/tag/patroni-view.ts reads it). */
export const CLIENT_ADDRESS_TAG = 'pgfollow_address'

/** The Patroni cluster name (its DCS scope). */
export const HA_SCOPE = 'pgfollow'

export interface PatroniNodeOptions {
  /** Member name; also the replica's application_name and slot name. */
  name: string
  /** host:port the REST API listens on, and the one others reach it at. */
  restListen: string
  restConnect: string
  /** host:port PostgreSQL listens on, and the one others reach it at. */
  pgListen: string
  pgConnect: string
  dataDir: string
  /** PostgreSQL's bin directory ('' : whatever is on PATH). */
  binDir: string
  /** Where Patroni writes the password file pg_basebackup and pg_rewind use. */
  pgpass: string
  /** etcd v3 client endpoints, host:port. */
  etcdHosts: string[]
  superuser: string
  superuserPassword: string
  replicatorPassword: string
  /**
   * Networks clients, replicas and Patroni itself connect from, for pg_hba
   * (CIDRs or keywords such as samenet). Patroni connects to its own node
   * over TCP on the loopback when it listens on every address.
   */
  networks: string[]
  /** Any mode but off turns on Patroni's synchronous_mode (one synchronous standby). */
  synchronous: SynchronousMode
  /** Major version of the server, for settings that only newer ones know. */
  major: number
  /** Extra server settings for every node (e.g. fsync off in tests). */
  settings?: Record<string, string>
  timing?: { ttl: number; loopWait: number; retryTimeout: number }
  /**
   * host:port clients reach this node at, when it differs from pgConnect
   * (a container's published port): Patroni lists it as the member tag
   * `pgfollow_address`, which the sql tag matches nodes by.
   */
  clientAddress?: string
}

/**
 * Patroni's configuration for one node. Settings Patroni requires to be the
 * same on every node (wal_level, max_wal_senders, ...) go to the DCS at
 * bootstrap; Patroni itself owns listen_addresses, port and
 * synchronous_standby_names, so they are left out of the shared settings.
 * The result is plain JSON, which is also valid YAML.
 */
export function patroniConfig(options: PatroniNodeOptions): Record<string, unknown> {
  const timing = options.timing ?? HA_TIMING
  const shared = serverSettings({ listen: '', replicaNames: [], synchronous: 'off', major: options.major })
  delete shared.listen_addresses
  // With fsync off (test clusters) nothing is durable anyway: skip syncing the initdb and base backup copies too.
  const noSync = options.settings?.fsync === 'off' ? ['no-sync'] : []
  return {
    scope: HA_SCOPE,
    namespace: '/pgfollow/',
    name: options.name,
    restapi: { listen: options.restListen, connect_address: options.restConnect },
    etcd3: { hosts: options.etcdHosts },
    bootstrap: {
      dcs: {
        ttl: timing.ttl,
        loop_wait: timing.loopWait,
        retry_timeout: timing.retryTimeout,
        // A replica further behind than this is never promoted (1 MiB).
        maximum_lag_on_failover: 1024 * 1024,
        // A crashed leader fails over at once instead of being restarted in
        // place for up to 300 s: the leader going down means a failover.
        master_start_timeout: 0,
        // Patroni 3.0 knows one synchronous standby at a time (FIRST 1); it
        // promotes only that standby, so no acknowledged commit is lost.
        synchronous_mode: options.synchronous !== 'off',
        postgresql: {
          use_pg_rewind: true,
          use_slots: true,
          parameters: { ...shared, ...options.settings },
        },
      },
      initdb: [{ encoding: 'UTF8' }, { locale: 'C' }, { auth: 'scram-sha-256' }, ...noSync],
    },
    postgresql: {
      listen: options.pgListen,
      connect_address: options.pgConnect,
      data_dir: options.dataDir,
      bin_dir: options.binDir,
      pgpass: options.pgpass,
      // A new replica's base backup starts right away instead of after a spread checkpoint (minutes).
      basebackup: [{ checkpoint: 'fast' }, ...noSync],
      authentication: {
        superuser: { username: options.superuser, password: options.superuserPassword },
        replication: { username: REPLICATOR_ROLE, password: options.replicatorPassword },
        rewind: { username: options.superuser, password: options.superuserPassword },
      },
      // TCP only: no unix socket, so pg_hba needs no `local` line (as the embedded cluster).
      parameters: { unix_socket_directories: '', password_encryption: 'scram-sha-256' },
      pg_hba: options.networks.flatMap((network) => hbaLines(network).split('\n').filter((line) => line.trim() && !line.startsWith('#'))),
    },
    tags: {
      nofailover: false,
      noloadbalance: false,
      clonefrom: false,
      nosync: false,
      ...(options.clientAddress ? { [CLIENT_ADDRESS_TAG]: options.clientAddress } : {}),
    },
  }
}

/** The configuration as patroni.yml text (JSON is YAML). */
export function patroniYaml(options: PatroniNodeOptions): string {
  return JSON.stringify(patroniConfig(options), null, 2) + '\n'
}
