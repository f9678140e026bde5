/**
 * What the router does when a statement fails: a pure decision from what
 * the statement is, where it ran and what came back, to one action. Kept
 * apart from the router so it reads (and is tested) as a table.
 */
import { LeaderUnavailableError, WriteOnReplicaError } from './errors.ts'
import { authenticationFailure, connectionLost, neverConnected, READ_TIMEOUT, readOnlyRefusal, recoveryConflict, tooManyClients } from './failures.ts'

export interface AttemptFacts {
  kind: 'read' | 'write'
  /** How the caller sent it: the plain tag, `sql.leader`, or `sql.replica`. */
  intent: 'auto' | 'leader' | 'replica'
  /** It ran on the node the router uses as leader. */
  onLeader: boolean
  /** A stream (cursor, forEach) already handed rows to the caller: running it again would repeat them. */
  delivered: boolean
  /** It was already retried on a (re)discovered leader once. */
  leaderRetried: boolean
}

export type Action =
  /** Run the read on another node. */
  | { do: 'retry-read'; ban: boolean }
  /** A replica refused it as a write: remember its text, run it on the leader. */
  | { do: 'retry-on-leader' }
  /** The leader refused a write as read-only: ask it whether it is in recovery; demoted → rediscover and retry, else the error is the caller's. */
  | { do: 'confirm-demotion' }
  /** Nothing was sent to the leader: find the writable node and retry once. */
  | { do: 'rediscover-then-retry'; ban: boolean }
  /** Give the caller an error: the node's own (`as-is`), or one of pgfollow's that says what to do. */
  | { do: 'fail'; error: FailWith; ban: boolean }

export type FailWith =
  | 'as-is'
  | 'login-refused'
  | 'write-maybe-applied'
  | 'leader-unavailable'
  | 'replica-refused-write'
  | 'stream-wrote'

/** The decision. Rows are checked in order; each says why in its comment. */
export function decide(facts: AttemptFacts, error: unknown): Action {
  const { kind, intent, onLeader, delivered, leaderRetried } = facts
  // A refused login is configuration: no other node of the same descriptor will take it for a write.
  if (authenticationFailure(error)) return kind === 'read' && !delivered ? { do: 'retry-read', ban: true } : fail('login-refused', true)
  // The server is up but full: say so (53300), and let a read try another node.
  if (tooManyClients(error)) return kind === 'read' && !delivered ? { do: 'retry-read', ban: false } : fail('as-is', false)
  if (readOnlyRefusal(error)) {
    if (onLeader) return leaderRetried ? fail('as-is', false) : { do: 'confirm-demotion' }
    if (delivered) return fail('stream-wrote', false)
    if (intent === 'replica') return fail('replica-refused-write', false)
    return { do: 'retry-on-leader' }
  }
  // Only raised once the node also failed the monitor's check: the node is gone, not the statement slow.
  if (code(error) === READ_TIMEOUT) return kind === 'read' && !delivered ? { do: 'retry-read', ban: true } : fail('as-is', true)
  if (neverConnected(error)) {
    if (kind === 'read') return { do: 'retry-read', ban: true }
    return onLeader && !leaderRetried ? { do: 'rediscover-then-retry', ban: true } : fail('leader-unavailable', true)
  }
  if (connectionLost(error)) {
    if (kind === 'read' && !delivered) return { do: 'retry-read', ban: true }
    return fail(kind === 'write' && onLeader ? 'write-maybe-applied' : 'as-is', true)
  }
  // A standby cancelled the read because replay needed its rows: another node (or later) will do.
  if (recoveryConflict(error) && kind === 'read' && !delivered) return { do: 'retry-read', ban: false }
  return fail('as-is', false)
}

function fail(error: FailWith, ban: boolean): Action {
  return { do: 'fail', error, ban }
}

function code(error: unknown): string {
  return String((error as { code?: unknown })?.code ?? '')
}

/**
 * The error a `fail` decision gives the caller, for the kinds pgfollow words
 * itself (`as-is`, `login-refused` and `leader-unavailable` are the
 * caller's own error or leadership's).
 */
export function failureError(
  kind: 'write-maybe-applied' | 'replica-refused-write' | 'stream-wrote',
  node: { name: string; safeUrl: string },
  cause: unknown,
): Error {
  switch (kind) {
    case 'write-maybe-applied':
      return new LeaderUnavailableError(
        `The connection to the leader ${node.safeUrl} broke while the statement ran, so it may or may not have been applied: check before repeating it. Writes resume once a leader answers.`,
        { cause },
      )
    case 'replica-refused-write':
      return new WriteOnReplicaError(
        `sql.replica sent a statement that writes, and ${node.name} refused it (25006); nothing was written and the leader was not asked. Send writes through \`sql\` or \`sql.leader\`.`,
        { cause },
      )
    case 'stream-wrote':
      return new WriteOnReplicaError(
        `This streamed statement writes: ${node.name} refused it (25006) after rows had already reached your cursor/forEach, so it was not retried (that would repeat them) and nothing was written. pgfollow now sends this statement to the leader: run it again, or use \`sql.leader\` for it.`,
        { cause },
      )
  }
}
