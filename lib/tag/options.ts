/**
 * Options of `connect()`, normalised in one place: explicit option, else
 * the descriptor (file, PGFOLLOW_CLUSTER or the default path), else the
 * defaults in the table below. Bad values are rejected here, early, with a
 * message that names the option.
 */
import type postgres from 'postgres'
import { type ClusterDescriptor, loadDescriptor, validateDescriptor } from './descriptor.ts'
import { ConfigError } from './errors.ts'
import type { NoCustomTypes } from './tag.ts'

export type Balance = 'round-robin' | 'random' | 'least-busy'
export const BALANCES: readonly Balance[] = ['round-robin', 'random', 'least-busy']

export interface ConnectOptions<T extends Record<string, postgres.PostgresType> = NoCustomTypes> {
  /** Leader URL; with `replicas`, replaces the descriptor file. */
  leader?: string
  replicas?: string[]
  /** Patroni REST endpoints (http://host:port): the tag then also follows Patroni's view of the cluster. */
  patroni?: string[]
  /** Path of a descriptor file (default: PGFOLLOW_CLUSTER, else .pgfollow/cluster.json). */
  cluster?: string
  /** How reads spread over healthy replicas. */
  balance?: Balance
  /** Relative weight per replica, in descriptor order (default all 1). */
  weights?: number[]
  /** Beyond either limit a replica is retired from reads; restored below half of both. */
  maxLag?: { bytes?: number; ms?: number }
  /** How often the monitor reads LSNs, ms. */
  monitorInterval?: number
  /** How long a causal session waits for a caught-up replica before reading from the leader, ms. */
  sessionWait?: number
  /** With no healthy replica, read from the leader (true) or throw NoReplicaError (false). */
  fallback?: boolean
  /**
   * Per-host connect timeout, ms: one dead host cannot stall a caller longer.
   * Default: `postgres.connect_timeout` (seconds) when given, else 2000.
   */
  connectTimeout?: number
  /**
   * A replica read on the wire this long, on a node that also stopped
   * answering the monitor, is retried elsewhere and the node banned, ms (0:
   * never). A slow read on a live node is left to finish.
   */
  readTimeout?: number
  /** Exponential back-off of a failing node: first and longest ban, ms. */
  ban?: { base?: number; max?: number }
  /**
   * Lanes (connections for routed statements) per node at most; the rest
   * wait in the router's queue for the next free lane. A replica's reads use
   * as many of them as measurably serve more (they start at 2). Default:
   * `postgres.max` (10).
   */
  inFlight?: number
  /** Reads pipelined on one connection of a replica at most (writes always run alone). Default 16. */
  pipeline?: number
  /**
   * Volatile functions that only read, so statements calling them (or views
   * that call them) may run on replicas: `'name'` (any schema) or
   * `'schema.name'`. Other volatile functions send their statements to the leader.
   */
  readOnlyFunctions?: string[]
  /**
   * postgres.js options for every node's pool (max, types, transform,
   * onnotice, debug, ...), applied identically to each; they win over
   * pgfollow's defaults. `sql.options` is one view of them: a change made
   * there later (as Drizzle does with parsers) reaches every pool.
   */
  postgres?: postgres.Options<T>
}

export interface NormalizedOptions {
  leader: string
  replicas: string[]
  /** Patroni REST endpoints; empty when the cluster has no Patroni. */
  patroni: string[]
  balance: Balance
  weights: number[]
  maxLag: { bytes: number; ms: number }
  monitorInterval: number
  sessionWait: number
  fallback: boolean
  connectTimeout: number
  readTimeout: number
  ban: { base: number; max: number }
  readOnlyFunctions: string[]
  inFlight: number
  pipeline: number
  postgres: postgres.Options<Record<string, postgres.PostgresType>>
}

const DEFAULTS = {
  balance: 'round-robin' as Balance,
  maxLagBytes: 16 * 1024 * 1024,
  maxLagMs: 10_000,
  monitorInterval: 1_000,
  sessionWait: 100,
  fallback: true,
  connectTimeout: 2_000,
  readTimeout: 10_000,
  banBase: 250,
  banMax: 5_000,
  inFlight: 10,
  pipeline: 16,
}

/** `connect()` / `connect('file.json')` / `connect({ ... })` → one normalised object. */
export function normalizeOptions(input?: string | ConnectOptions<Record<string, postgres.PostgresType>>): NormalizedOptions {
  const options: ConnectOptions<Record<string, postgres.PostgresType>> = typeof input === 'string' ? { cluster: input } : { ...input }
  const descriptor = resolveDescriptor(options)
  const weights = options.weights ?? descriptor.replicas.map(() => 1)
  if (weights.length !== descriptor.replicas.length || weights.some((w) => !(Number.isFinite(w) && w > 0))) {
    throw new ConfigError(
      `weights must hold one positive number per replica (${descriptor.replicas.length}), got ${JSON.stringify(options.weights)}.`,
    )
  }
  const balance = options.balance ?? DEFAULTS.balance
  if (!BALANCES.includes(balance)) throw new ConfigError(`balance must be one of ${BALANCES.join(', ')}, not "${balance}".`)
  return {
    ...descriptor,
    patroni: descriptor.patroni ?? [],
    balance,
    weights,
    maxLag: {
      bytes: positive('maxLag.bytes', options.maxLag?.bytes ?? DEFAULTS.maxLagBytes),
      ms: positive('maxLag.ms', options.maxLag?.ms ?? DEFAULTS.maxLagMs),
    },
    monitorInterval: positive('monitorInterval', options.monitorInterval ?? DEFAULTS.monitorInterval),
    sessionWait: atLeastZero('sessionWait', options.sessionWait ?? DEFAULTS.sessionWait),
    fallback: options.fallback ?? DEFAULTS.fallback,
    connectTimeout: positive('connectTimeout', options.connectTimeout ?? poolConnectTimeoutMs(options.postgres) ?? DEFAULTS.connectTimeout),
    readTimeout: atLeastZero('readTimeout', options.readTimeout ?? DEFAULTS.readTimeout),
    ban: {
      base: positive('ban.base', options.ban?.base ?? DEFAULTS.banBase),
      max: positive('ban.max', options.ban?.max ?? DEFAULTS.banMax),
    },
    readOnlyFunctions: functionNames('readOnlyFunctions', options.readOnlyFunctions ?? []),
    inFlight: positiveInteger('inFlight', options.inFlight ?? options.postgres?.max ?? DEFAULTS.inFlight),
    pipeline: positiveInteger('pipeline', options.pipeline ?? DEFAULTS.pipeline),
    postgres: options.postgres ?? {},
  }
}

/** postgres.js's `connect_timeout` (seconds, a number or a numeric string) in ms, when the user gave one. */
function poolConnectTimeoutMs(pool: ConnectOptions['postgres']): number | undefined {
  const seconds = pool?.connect_timeout
  if (seconds === undefined || seconds === null) return undefined
  return positive('postgres.connect_timeout', Number(seconds)) * 1000
}

function resolveDescriptor(options: ConnectOptions<Record<string, postgres.PostgresType>>): ClusterDescriptor {
  if (options.leader !== undefined || options.replicas !== undefined) {
    if (options.cluster) throw new ConfigError('Give either `cluster` (a descriptor file) or `leader`/`replicas`, not both.')
    return validateDescriptor({ leader: options.leader, replicas: options.replicas ?? [], patroni: options.patroni }, 'connect() options')
  }
  const descriptor = loadDescriptor(options.cluster)
  if (options.patroni === undefined) return descriptor
  return validateDescriptor({ ...descriptor, patroni: options.patroni }, 'connect() options')
}

function positive(name: string, value: number): number {
  if (!(typeof value === 'number' && Number.isFinite(value) && value > 0)) throw new ConfigError(`${name} must be a positive number, not ${value}.`)
  return value
}

function positiveInteger(name: string, value: number): number {
  if (!(Number.isInteger(value) && value > 0)) throw new ConfigError(`${name} must be a positive integer, not ${value}.`)
  return value
}

function atLeastZero(name: string, value: number): number {
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) throw new ConfigError(`${name} must be a number >= 0, not ${value}.`)
  return value
}

/** `name` or `schema.name`, unquoted, as PostgreSQL stores them (case matters only to the server, not here). */
const FUNCTION_NAME = /^[^.\s"()]+(\.[^.\s"()]+)?$/

function functionNames(name: string, value: unknown): string[] {
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || !FUNCTION_NAME.test(item))) {
    throw new ConfigError(
      `${name} must be an array of function names, each 'name' or 'schema.name' without quotes or parentheses (e.g. ['audit.stamp', 'lookup']), not ${
        JSON.stringify(value)
      }.`,
    )
  }
  return value
}
