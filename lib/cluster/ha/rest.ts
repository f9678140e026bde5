/**
 * Patroni's REST API from the operator side: who leads, and the planned
 * switchover / manual failover that `failover.mjs` asks Patroni for on an
 * HA cluster instead of doing the steps itself.
 */
import { ClusterError } from '../../tag/errors.ts'
import { type PatroniMember, readPatroniCluster } from '../../tag/patroni-view.ts'

export type { PatroniMember }

/** /cluster from the first endpoint that answers, or a ClusterError naming them all. */
export async function clusterView(endpoints: string[], timeoutMs = 2_000): Promise<PatroniMember[]> {
  const view = await readPatroniCluster(endpoints, timeoutMs)
  if (!view) throw new ClusterError(`No Patroni REST endpoint answered (${endpoints.join(', ')}): is the HA cluster up?`)
  return view.members
}

/** The member Patroni names leader (and that runs), or null. */
export function leaderMember(members: PatroniMember[]): PatroniMember | null {
  return members.find((member) => member.role === 'leader' && member.state === 'running') ?? null
}

export interface SwitchoverResult {
  kind: 'switchover' | 'failover'
  previous: string | null
  promoted: string
  seconds: number
}

/**
 * Asks Patroni to move the leadership: a switchover when a leader runs (it
 * demotes cleanly, no committed write is lost), a failover otherwise. Waits
 * until /cluster names the new leader, running.
 */
export async function patroniSwitchover(endpoints: string[], candidate?: string, timeoutMs = 60_000): Promise<SwitchoverResult> {
  const started = Date.now()
  const members = await clusterView(endpoints)
  const leader = leaderMember(members)
  const replicas = members.filter((member) => member.role !== 'leader' && member.state === 'running')
  if (candidate && !members.some((member) => member.name === candidate)) {
    throw new ClusterError(`Patroni knows no member "${candidate}": members are ${members.map((member) => member.name).join(', ')}.`)
  }
  const target = candidate ?? replicas.find((member) => member.role === 'sync_standby')?.name ?? replicas[0]?.name
  if (!target) throw new ClusterError('No running replica to promote: Patroni lists none. Start the replicas first (`cluster.mjs up`).')
  if (leader && leader.name === target) throw new ClusterError(`${target} already leads.`)
  const kind = leader ? 'switchover' : 'failover'
  const body = leader ? { leader: leader.name, candidate: target } : { candidate: target }
  const api = leader?.api_url ? new URL(leader.api_url).origin : endpoints[0]
  const response = await fetch(`${api}/${kind}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
  const text = await response.text()
  if (!response.ok) throw new ClusterError(`Patroni refused the ${kind} to ${target} (HTTP ${response.status}): ${text.trim()}`)
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const now = await readPatroniCluster(endpoints, 1_000)
    const current = now && leaderMember(now.members)
    if (current?.name === target) return { kind, previous: leader?.name ?? null, promoted: target, seconds: (Date.now() - started) / 1000 }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new ClusterError(`Patroni accepted the ${kind} but did not name ${target} leader within ${timeoutMs / 1000} s: see its patroni.log.`)
}
