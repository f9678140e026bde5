/**
 * The Patroni configuration of one node, in one function: the local HA
 * cluster (lib/cluster/ha) writes it to each node's patroni.yml, and the
 * Pulumi program (infra/) gives the same to each container, so the two
 * cannot drift. Pure: no file, process or network access.
 */
import { hbaLines, REPLICATOR_ROLE, serverSettings, type SynchronousMode } from '../../topology.ts'

/** Failover timing: Patroni's defaults (ttl 30, loop_wait 10) take half a minute; these fail over in ~5 s. */
export const HA_TIMING = { ttl: 5, loopWait: 1, retryTimeout: 2 } as const

/** The member tag that says where clients reach a node (lib/tag/patroni.ts reads it). */
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
