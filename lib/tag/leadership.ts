/**
 * Which node takes the writes: the descriptor's leader until a check finds
 * another node that is not in recovery. Discovery asks every node, election
 * moves writes and emits `leader`, and `require()` gives the router a
 * leader that answers or an error that says what to do.
 */
import type { EventEmitter } from 'node:events'
import { ConfigError, LeaderUnavailableError } from './errors.ts'
import { CHECK_TIMEOUT, tooManyClients } from './failures.ts'
import { withTimeout } from './health.ts'
import type { ClusterNode } from './node.ts'
import type { NormalizedOptions } from './options.ts'

/** What leadership needs from the router: the nodes, and where health goes. */
export interface LeaderCluster extends Pick<EventEmitter, 'emit' | 'listenerCount'> {
  readonly nodes: ClusterNode[]
  readonly options: NormalizedOptions
  nodeFailed(node: ClusterNode, error: unknown): void
  nodeAnswered(node: ClusterNode): void
}

export class Leadership {
  leader: ClusterNode
  readonly #cluster: LeaderCluster
  #discovery: Promise<ClusterNode | null> | null = null
  readonly #warned = new Set<string>()
  ended = false

  /** With Patroni, its view names the new leader as soon as it has one (asked alongside the nodes). */
  readonly #follow: () => Promise<unknown> | undefined

  constructor(cluster: LeaderCluster, follow: () => Promise<unknown> | undefined = () => undefined) {
    this.#cluster = cluster
    this.#follow = follow
    this.leader = cluster.nodes[0]
  }

  get usable(): boolean {
    return this.leader.failures === 0 && this.leader.inRecovery !== true
  }

  /**
   * Moves writes to the writable node. Several writable nodes mean a split
   * brain: keep the current leader if it is one of them, and warn.
   */
  elect(writable: ClusterNode[]): void {
    const names = () => writable.map((node) => node.name).join(', ')
    if (writable.length === 0 || writable.includes(this.leader)) {
      if (writable.length > 1) this.warn(`More than one node accepts writes (${names()}): writes stay on ${this.leader.name}. Fence the others.`)
      return
    }
    const previous = this.leader
    this.leader = writable[0]
    if (writable.length > 1) this.warn(`More than one node accepts writes (${names()}): writes go to ${this.leader.name}. Fence the others.`)
    this.#cluster.emit('leader', { name: this.leader.name, url: this.leader.safeUrl, previous: previous.name })
  }

  /** Asks every node whether it is in recovery; the one that is not takes the writes. Concurrent callers share one round. */
  discover(): Promise<ClusterNode | null> {
    if (this.ended) return Promise.resolve(null)
    this.#discovery ??= (async () => {
      const cluster = this.#cluster
      await Promise.all([
        this.#follow(),
        ...cluster.nodes.map(async (node) => {
          try {
            node.inRecovery = await this.inRecovery(node)
            cluster.nodeAnswered(node)
          } catch (error) {
            if (node.failures === 0) cluster.nodeFailed(node, error)
          }
        }),
      ])
      this.elect(cluster.nodes.filter((node) => node.failures === 0 && node.inRecovery === false))
      return this.usable ? this.leader : null
    })().finally(() => (this.#discovery = null))
    return this.#discovery
  }

  /** One node's answer to pg_is_in_recovery(), bounded by connectTimeout. */
  async inRecovery(node: ClusterNode): Promise<boolean> {
    const query = node.monitor`select pg_is_in_recovery() as in_recovery`
    const [row] = await withTimeout(query, this.#cluster.options.connectTimeout, node.name, CHECK_TIMEOUT)
    return row.in_recovery
  }

  /** Lets a discovery in progress finish (end() waits for it). */
  settled(): Promise<unknown> {
    return Promise.resolve(this.#discovery).catch(() => {})
  }

  /** A leader that answers, or an error that says what to do (a refused login is a configuration problem, a full server says so). */
  require(): ClusterNode {
    if (this.usable) return this.leader
    if (this.leader.loginRefused) throw this.loginRefused([this.leader])
    if (this.leader.failures > 0 && tooManyClients(this.leader.lastFailure)) throw this.leader.lastFailure
    void this.discover()
    throw this.unavailable(this.leader.lastFailure ?? undefined)
  }

  unavailable(cause?: unknown): LeaderUnavailableError {
    const leader = this.leader
    const why = leader.inRecovery === true
      ? `${leader.safeUrl} is in recovery (a replica) and no other node accepts writes`
      : `the leader ${leader.safeUrl} does not answer${leader.lastError ? ` (${leader.lastError})` : ''}`
    return new LeaderUnavailableError(
      `No leader accepts writes: ${why}. Reads still go to replicas. Promote a replica (npx zx scripts/failover.mjs) or bring the leader back; writes resume by themselves once a leader answers.`,
      { cause },
    )
  }

  loginRefused(nodes: ClusterNode[], cause: unknown = nodes[0]?.lastFailure): ConfigError {
    const names = nodes.map((node) => `${node.name} (${node.safeUrl})`).join(', ')
    return new ConfigError(`${names} refused the login: fix the user or password in the descriptor (or connect() options).`, { cause })
  }

  /** Each distinct warning once: to `warning` listeners, else to the console. */
  warn(message: string): void {
    if (this.#warned.has(message)) return
    this.#warned.add(message)
    if (this.#cluster.listenerCount('warning') > 0) this.#cluster.emit('warning', { message })
    else console.warn(`pgfollow: ${message}`)
  }
}
