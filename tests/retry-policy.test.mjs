// @deno
// The router's error policy, row by row: (statement, node, error) → action. No cluster.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const lib = typeof Deno !== 'undefined' ? '../lib/' : '../dist/'
const ext = typeof Deno !== 'undefined' ? '.ts' : '.js'
const { decide } = await import(`${lib}tag/retry-policy${ext}`)

const policy = suite('retry policy')

const read = { kind: 'read', intent: 'auto', onLeader: false, delivered: false, leaderRetried: false }
const write = { kind: 'write', intent: 'auto', onLeader: true, delivered: false, leaderRetried: false }
const e = (code, message = '') => ({ code, message })

const rows = [
  // what ran, the error, the action
  ['read on a replica, refused (25006)', read, e('25006'), { do: 'retry-on-leader' }],
  ['sql.replica read refused (25006)', { ...read, intent: 'replica' }, e('25006'), { do: 'fail', error: 'replica-refused-write', ban: false }],
  ['stream that delivered rows, refused (25006)', { ...read, delivered: true }, e('25006'), { do: 'fail', error: 'stream-wrote', ban: false }],
  ['write on the leader, refused (25006)', write, e('25006'), { do: 'confirm-demotion' }],
  ['write retried on a new leader, refused again', { ...write, leaderRetried: true }, e('25006'), { do: 'fail', error: 'as-is', ban: false }],
  ['read, connection refused', read, e('ECONNREFUSED'), { do: 'retry-read', ban: true }],
  ['read, check timed out', read, e('PGFOLLOW_CHECK_TIMEOUT'), { do: 'retry-read', ban: true }],
  ['read, dead node (read timeout)', read, e('PGFOLLOW_READ_TIMEOUT'), { do: 'retry-read', ban: true }],
  ['read, connection lost', read, e('CONNECTION_CLOSED'), { do: 'retry-read', ban: true }],
  ['stream that delivered rows, connection lost', { ...read, delivered: true }, e('CONNECTION_CLOSED'), { do: 'fail', error: 'as-is', ban: true }],
  ['read, recovery conflict', read, e('40001', 'canceling statement due to conflict with recovery'), { do: 'retry-read', ban: false }],
  ['read, serialization failure (not recovery)', read, e('40001', 'could not serialize access'), { do: 'fail', error: 'as-is', ban: false }],
  ['read, too many clients', read, e('53300'), { do: 'retry-read', ban: false }],
  ['write, too many clients', write, e('53300'), { do: 'fail', error: 'as-is', ban: false }],
  ['read, wrong password', read, e('28P01'), { do: 'retry-read', ban: true }],
  ['write, wrong password', write, e('28P01'), { do: 'fail', error: 'login-refused', ban: true }],
  ['write, leader never connected', write, e('ECONNREFUSED'), { do: 'rediscover-then-retry', ban: true }],
  ['write, never connected after a retry', { ...write, leaderRetried: true }, e('CONNECT_TIMEOUT'), {
    do: 'fail',
    error: 'leader-unavailable',
    ban: true,
  }],
  ['write, connection lost on the leader', write, e('ECONNRESET'), { do: 'fail', error: 'write-maybe-applied', ban: true }],
  ['write, SQL error', write, e('23505'), { do: 'fail', error: 'as-is', ban: false }],
  ['read, SQL error', read, e('42P01'), { do: 'fail', error: 'as-is', ban: false }],
]

for (const [name, facts, error, action] of rows) {
  policy(name, () => assert.equal(decide(facts, error), action))
}

policy.run()
