/**
 * How a read picks one of the replicas that may serve it. Each picker sees
 * only eligible nodes (healthy, caught up for the session), so health and
 * consistency never depend on the balancing policy.
 */
import type { Balance } from './options.ts'

export interface Candidate {
  weight: number
  inFlight: number
}

export type Picker = <T extends Candidate>(candidates: T[]) => T

/** A picker with its own state (round-robin keeps a position). */
export function createPicker(balance: Balance): Picker {
  if (balance === 'random') return pickRandom
  if (balance === 'least-busy') return pickLeastBusy
  return createRoundRobin()
}

/**
 * Smooth weighted round-robin (as in nginx): with equal weights it is plain
 * rotation, with unequal ones the heavy node is spread out, not bunched.
 */
function createRoundRobin(): Picker {
  const current = new WeakMap<Candidate, number>()
  let turn = 0
  return (candidates) => {
    if (candidates.length === 1) return candidates[0]
    if (equalWeights(candidates)) return candidates[turn++ % candidates.length]
    let total = 0
    let best = candidates[0]
    let bestScore = -Infinity
    for (const node of candidates) {
      const score = (current.get(node) ?? 0) + node.weight
      current.set(node, score)
      total += node.weight
      if (score > bestScore) {
        bestScore = score
        best = node
      }
    }
    current.set(best, bestScore - total)
    return best
  }
}

function equalWeights(candidates: Candidate[]): boolean {
  for (let i = 1; i < candidates.length; i++) if (candidates[i].weight !== candidates[0].weight) return false
  return true
}

function pickRandom<T extends Candidate>(candidates: T[]): T {
  if (candidates.length === 1) return candidates[0]
  const total = candidates.reduce((sum, node) => sum + node.weight, 0)
  let point = Math.random() * total
  for (const node of candidates) {
    point -= node.weight
    if (point < 0) return node
  }
  return candidates[candidates.length - 1]
}

/**
 * Two random choices, the one with fewer reads in flight per unit of weight
 * wins: nearly as good as scanning all, and it does not herd every caller
 * onto the same momentarily idle node.
 */
function pickLeastBusy<T extends Candidate>(candidates: T[]): T {
  if (candidates.length === 1) return candidates[0]
  const a = pickRandom(candidates)
  let b = pickRandom(candidates)
  if (a === b) b = candidates[(candidates.indexOf(a) + 1) % candidates.length]
  return a.inFlight / a.weight <= b.inFlight / b.weight ? a : b
}
