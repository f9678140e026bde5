/**
 * The cluster's options, normalised in one place: defaults in one table, every
 * value checked before a resource exists, and a plan of the nodes (names,
 * aliases, ports, slots, Docker hosts) that the component builds from.
 * Option names are the Pulumi config keys, so a message can say what to set.
 */
import { isIP } from 'node:net'
import * as pulumi from '@pulumi/pulumi'
import {
  DATABASE,
  DEFAULT_PORTS,
  nodeNames,
  parsePort,
  parseSynchronousMode,
  REPLICA_PORT_STEP,
  slotName,
  SUPERUSER,
  type SynchronousMode,
} from '../lib/topology.ts'

/** Where one node runs when it is not on the local Docker engine. */
export interface NodeHost {
  /** Docker host URL, e.g. `ssh://me@box2` or `tcp://10.0.0.12:2376`. */
  docker?: string
  /** Address other machines reach this node's published port at (required with `docker`). */
  address?: string
  /** Address the published port binds to on that host (default 0.0.0.0 with `docker`). */
  bindAddress?: string
}

/** Arguments of `PostgresCluster`; each one is also a config key of infra/Pulumi.yaml. */
export interface PostgresClusterArgs {
  /** Image of every node; its tag must start with the major version (postgres:18, postgres:18.1-alpine). */
  postgresImage?: string
  /** Number of streaming replicas (0 or more). */
  replicas?: number
  /** Published port of the leader. */
  leaderPort?: number
  /** Published ports of the replicas, in order; missing ones continue 10 apart. */
  replicaPorts?: number[]
  /** off | any | first: synchronous_standby_names over the replicas' application_names. */
  synchronous?: SynchronousMode
  /** Host address the published ports bind to. */
  bindAddress?: string
  /** Run pgAdmin with every node registered. */
  pgadmin?: boolean
  pgadminImage?: string
  /** pgAdmin login; pgAdmin rejects addresses it considers undeliverable (e.g. *.local). */
  pgadminEmail?: string
  pgadminPort?: number
  /** Extra networks pg_hba admits, besides the cluster network (e.g. replicas on other hosts). */
  allowedCidrs?: string[]
  /** Per-node Docker host: keys are node names (leader, replica1, ...). */
  hosts?: Record<string, NodeHost>
  /** Prefix of Docker names (containers, volumes, network); must be unique per Docker engine. */
  namePrefix?: string
  /** off: the leader and replicas as plain containers; patroni: Patroni + etcd manage them (infra/patroni.ts). */
  ha?: HaMode
  /** etcd image of the `ha: patroni` cluster. */
  etcdImage?: string
  /** `ha: patroni`: published port of the first node's Patroni REST API; the next nodes' follow, one apart. */
  patroniPort?: number
  /** Superuser password; generated with @pulumi/random when unset. */
  postgresPassword?: pulumi.Input<string>
  /** Password of the replication role; generated when unset. */
  replicatorPassword?: pulumi.Input<string>
  /** pgAdmin login password; generated when unset. */
  pgadminPassword?: pulumi.Input<string>
}

// prettier-ignore
/** Defaults of the plain options; infra/Pulumi.yaml declares the same (a test holds them equal). */
export const DEFAULTS = {
  postgresImage: 'postgres:18',
  replicas: 2,
  leaderPort: DEFAULT_PORTS[0],
  replicaPorts: DEFAULT_PORTS.slice(1),
  synchronous: 'off' as SynchronousMode,
  bindAddress: '127.0.0.1',
  pgadmin: true,
  pgadminImage: 'dpage/pgadmin4:9',
  pgadminEmail: 'admin@example.com',
  pgadminPort: 5050,
  allowedCidrs: [] as string[],
  hosts: {} as Record<string, NodeHost>,
  ha: 'off' as HaMode,
  etcdImage: 'quay.io/coreos/etcd:v3.5.17',
  patroniPort: 8008,
}

/** High-availability modes: none, or Patroni with etcd. */
export type HaMode = 'off' | 'patroni'
export const HA_MODES: readonly HaMode[] = ['off', 'patroni']

/** Config keys holding passwords: empty or unset means "generate one". */
export const SECRET_KEYS = ['postgresPassword', 'replicatorPassword', 'pgadminPassword'] as const

/** Replica ports past the configured ones continue this far apart (5480, 5490, 5500, ...). */
export { REPLICA_PORT_STEP }
/** Port every node listens on inside its container. */
export const CONTAINER_PORT = 5432
/** pgAdmin's port inside its container. */
export const PGADMIN_CONTAINER_PORT = 80
/** The database the leader's init script creates and the descriptor's URLs name, and their superuser: the same as the local cluster's. */
export { DATABASE, SUPERUSER }

export interface NodePlan {
  /** `leader`, `replica1`, ...: also the replica's application_name. */
  name: string
  role: 'leader' | 'replica'
  /** Stable network alias on the cluster network: `pg-leader`, `pg-replica1`, ... */
  alias: string
  /** Published port on the node's Docker host. */
  port: number
  /** The replica's physical slot on the leader. */
  slot?: string
  /** Docker host URL; undefined means the local engine (DOCKER_HOST). */
  docker?: string
  /** Host in the URLs of the descriptor and of nodes on other Docker hosts. */
  address: string
  bindAddress: string
  containerName: string
  volumeName: string
}

export interface ClusterPlan {
  image: string
  /** PostgreSQL major version, read from the image tag. */
  major: number
  /** PGDATA inside the container; under the volume, as PostgreSQL 18 images lay it out. */
  pgdata: string
  leader: NodePlan
  replicas: NodePlan[]
  nodes: NodePlan[]
  synchronous: SynchronousMode
  allowedCidrs: string[]
  namePrefix: string
  networkName: string
  pgadmin: null | { image: string; email: string; port: number; bindAddress: string; address: string; containerName: string }
}

/** Where the data volume is mounted: PostgreSQL 18 images keep PGDATA under it, in 18/docker. */
export const VOLUME_MOUNT = '/var/lib/postgresql'

/** A configuration value is wrong; Pulumi prints a RunError without a stack trace. */
export class ClusterConfigError extends pulumi.RunError {
  constructor(message: string) {
    super(`pgfollow infra: ${message}`)
    this.name = 'ClusterConfigError'
  }
}

/** Checks every option and lays out the nodes. Throws ClusterConfigError naming the config key. */
export function planCluster(args: PostgresClusterArgs, defaultPrefix = 'pgfollow'): ClusterPlan {
  const image = nonEmpty('postgresImage', args.postgresImage ?? DEFAULTS.postgresImage)
  const major = majorOf(image)
  const replicas = args.replicas ?? DEFAULTS.replicas
  if (!Number.isInteger(replicas) || replicas < 0) {
    fail(`replicas must be a whole number, 0 or more (got ${replicas}): pulumi config set replicas 2`)
  }
  const synchronous = checked(
    () => parseSynchronousMode(args.synchronous ?? DEFAULTS.synchronous, 'synchronous'),
    'pulumi config set synchronous off',
  )
  const bindAddress = ipAddress('bindAddress', args.bindAddress ?? DEFAULTS.bindAddress)
  const namePrefix = args.namePrefix ?? defaultPrefix
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(namePrefix)) {
    fail(`namePrefix "${namePrefix}" is not a valid Docker name: use letters, digits, _ . and -`)
  }
  const allowedCidrs = (args.allowedCidrs ?? DEFAULTS.allowedCidrs).map((cidr, i) => cidrOf(`allowedCidrs[${i}]`, cidr))

  const leaderPort = port('leaderPort', args.leaderPort ?? DEFAULTS.leaderPort)
  const replicaPorts = replicaPortsFor(replicas, args.replicaPorts ?? DEFAULTS.replicaPorts)
  const names = nodeNames(replicas)
  const hosts = args.hosts ?? DEFAULTS.hosts
  if (typeof hosts !== 'object' || hosts === null || Array.isArray(hosts)) {
    fail('hosts must be an object keyed by node name, e.g. {"replica2": {"docker": "ssh://me@box2", "address": "10.0.0.12"}}')
  }
  for (const key of Object.keys(hosts)) {
    if (!names.includes(key)) fail(`hosts.${key} names no node; the nodes are ${names.join(', ')}`)
  }

  const nodes: NodePlan[] = names.map((name, i) => {
    const host = hosts[name] ?? {}
    const docker = host.docker === undefined || host.docker === '' ? undefined : host.docker
    if (docker !== undefined && !host.address) {
      fail(`hosts.${name}.docker is set, so hosts.${name}.address must say where clients and the other nodes reach ${name}`)
    }
    const nodeBind = host.bindAddress ? ipAddress(`hosts.${name}.bindAddress`, host.bindAddress) : docker ? '0.0.0.0' : bindAddress
    return {
      name,
      role: i === 0 ? 'leader' : 'replica',
      alias: `pg-${name}`,
      port: i === 0 ? leaderPort : replicaPorts[i - 1],
      slot: i === 0 ? undefined : slotName(name),
      docker,
      address: host.address || urlHost(nodeBind),
      bindAddress: nodeBind,
      containerName: `${namePrefix}-${name}`,
      volumeName: `${namePrefix}-${name}-data`,
    }
  })
  const [leader, ...replicaNodes] = nodes

  const remote = replicaNodes.filter((node) => node.docker !== leader.docker)
  if (remote.length > 0) {
    const names = remote.map((node) => node.name).join(', ')
    if (!hosts.leader?.address) {
      fail(`${names} run(s) on another Docker host than the leader: set hosts.leader.address to the address they reach the leader at`)
    }
    if (isLoopback(leader.bindAddress)) {
      fail(
        `${names} run(s) on another Docker host, but the leader's port binds to ${leader.bindAddress}: set hosts.leader.bindAddress (or bindAddress) to 0.0.0.0 or the leader host's address`,
      )
    }
    if (allowedCidrs.length === 0) {
      fail(
        `${names} run(s) on another Docker host: add the address range they connect from to allowedCidrs, so the leader's pg_hba admits their replication connections`,
      )
    }
  }

  const pgadminOn = args.pgadmin ?? DEFAULTS.pgadmin
  const pgadmin = pgadminOn
    ? {
      image: nonEmpty('pgadminImage', args.pgadminImage ?? DEFAULTS.pgadminImage),
      email: email(args.pgadminEmail ?? DEFAULTS.pgadminEmail),
      port: port('pgadminPort', args.pgadminPort ?? DEFAULTS.pgadminPort),
      // pgAdmin runs beside the leader, on the same Docker host.
      bindAddress: leader.docker ? leader.bindAddress : bindAddress,
      address: leader.address,
      containerName: `${namePrefix}-pgadmin`,
    }
    : null

  checkUniquePorts(nodes, pgadmin && { docker: leader.docker, port: pgadmin.port })

  return {
    image,
    major,
    pgdata: `${VOLUME_MOUNT}/${major}/docker`,
    leader,
    replicas: replicaNodes,
    nodes,
    synchronous,
    allowedCidrs,
    namePrefix,
    networkName: `${namePrefix}-net`,
    pgadmin,
  }
}

/** The configured replica ports, continued REPLICA_PORT_STEP apart when there are more replicas. */
function replicaPortsFor(replicas: number, configured: number[]): number[] {
  if (!Array.isArray(configured)) fail(`replicaPorts must be a list of ports, e.g. [5480, 5490]`)
  const ports = configured.slice(0, replicas).map((value, i) => port(`replicaPorts[${i}]`, value))
  const base = DEFAULTS.replicaPorts[0]
  while (ports.length < replicas) {
    ports.push(ports.length === 0 ? base : ports[ports.length - 1] + REPLICA_PORT_STEP)
  }
  return ports.map((value, i) => port(`replicaPorts[${i}]`, value))
}

/** Two published ports on one Docker host collide; on different hosts they may be equal. */
function checkUniquePorts(nodes: NodePlan[], pgadmin: null | { docker?: string; port: number }): void {
  const used = new Map<string, string>()
  const claim = (docker: string | undefined, value: number, key: string) => {
    const slot = `${docker ?? 'local'}:${value}`
    const other = used.get(slot)
    if (other) fail(`port ${value} is given twice, to ${other} and to ${key}: every published port on one Docker host must differ`)
    used.set(slot, key)
  }
  for (const node of nodes) {
    claim(node.docker, node.port, node.role === 'leader' ? 'leaderPort' : `replicaPorts[${Number(node.name.slice('replica'.length)) - 1}]`)
  }
  if (pgadmin) claim(pgadmin.docker, pgadmin.port, 'pgadminPort')
}

/** `postgres:18` -> 18, `registry:5000/library/postgres:18.1-alpine@sha256:...` -> 18. */
export function majorOf(image: string): number {
  const lastSegment = image.split('@')[0].split('/').pop() ?? ''
  const tag = lastSegment.includes(':') ? lastSegment.slice(lastSegment.indexOf(':') + 1) : ''
  const major = Number.parseInt(tag, 10)
  if (!Number.isInteger(major) || major < 10) {
    fail(
      `cannot tell the PostgreSQL major version from postgresImage "${image}": use a tag that starts with it, e.g. postgres:18 or postgres:18.1-alpine`,
    )
  }
  return major
}

/** The host to put in a URL for a bind address: a wildcard is reached on loopback. */
export function urlHost(bindAddress: string): string {
  if (bindAddress === '0.0.0.0') return '127.0.0.1'
  if (bindAddress === '::') return '[::1]'
  return isIP(bindAddress) === 6 ? `[${bindAddress}]` : bindAddress
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1'
}

function port(key: string, value: unknown): number {
  return checked(() => parsePort(value, key))
}

/** The shared topology checks throw ConfigError; here they become ClusterConfigError, with a hint how to fix it. */
function checked<T>(check: () => T, hint?: string): T {
  try {
    return check()
  } catch (error) {
    const message = (error as Error).message.replace(/\.$/, '')
    return fail(hint ? `${message} (${hint})` : message)
  }
}

function nonEmpty(key: string, value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') fail(`${key} must not be empty`)
  return (value as string).trim()
}

function ipAddress(key: string, value: unknown): string {
  if (typeof value !== 'string' || isIP(value) === 0) {
    fail(`${key} must be an IP address such as 127.0.0.1 or 0.0.0.0 (got ${JSON.stringify(value)})`)
  }
  return value as string
}

function cidrOf(key: string, value: unknown): string {
  const [address, bits, extra] = typeof value === 'string' ? value.split('/') : []
  const family = address ? isIP(address) : 0
  const max = family === 6 ? 128 : 32
  if (family === 0 || bits === undefined || extra !== undefined || !/^\d+$/.test(bits) || Number(bits) > max) {
    fail(`${key} must be a network in CIDR form such as 10.0.0.0/24 (got ${JSON.stringify(value)})`)
  }
  return value as string
}

function email(value: unknown): string {
  if (typeof value !== 'string' || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(value)) {
    fail(`pgadminEmail must be an email address such as admin@example.com (got ${JSON.stringify(value)})`)
  }
  return value as string
}

function fail(message: string): never {
  throw new ClusterConfigError(message)
}
