/**
 * Which errors mean what for routing. Reads are idempotent and may be
 * retried on any other node; a write is retried only when the statement
 * surely never ran (the connection was never made, or the node refused it
 * as read-only).
 */

type ErrorLike = { code?: unknown; message?: unknown }

const code = (error: unknown): string => String((error as ErrorLike)?.code ?? '')

/** The connection was never established: nothing was sent, any statement may go elsewhere. */
const NEVER_CONNECTED = new Set([
  'ECONNREFUSED',
  'CONNECT_TIMEOUT',
  'PGFOLLOW_CHECK_TIMEOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
  '57P03', // cannot_connect_now: starting up or shutting down
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
])

/** The connection broke: a statement in flight may or may not have run. */
const CONNECTION_LOST = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '08000', // connection_exception
  '08003', // connection_does_not_exist
  '08006', // connection_failure
])

export function neverConnected(error: unknown): boolean {
  return NEVER_CONNECTED.has(code(error))
}

export function connectionLost(error: unknown): boolean {
  return CONNECTION_LOST.has(code(error))
}

/** Either way the node is unreachable right now (a full server, 53300, is not unreachable). */
export function nodeUnreachable(error: unknown): boolean {
  return neverConnected(error) || connectionLost(error)
}

/** 53300: the server is up but has no connection slot left (max_connections). */
export function tooManyClients(error: unknown): boolean {
  return code(error) === '53300'
}

/** Timeout codes, one per purpose. */
export const CONNECT_TIMEOUT = 'CONNECT_TIMEOUT'
/** A read on the wire got no answer for readTimeout and its node failed the monitor's check too. */
export const READ_TIMEOUT = 'PGFOLLOW_READ_TIMEOUT'
/** A health or role check (the monitor, leader discovery, a replay-position probe) got no answer in time. */
export const CHECK_TIMEOUT = 'PGFOLLOW_CHECK_TIMEOUT'

/** SQLSTATE 25006: a hot standby (or a demoted leader) refused a write. */
export function readOnlyRefusal(error: unknown): boolean {
  return code(error) === '25006'
}

/** A standby cancelled the query because replay needed the rows (or the database) it used. */
export function recoveryConflict(error: unknown): boolean {
  const sqlstate = code(error)
  return (sqlstate === '40001' || sqlstate === '57P04') && /recovery/i.test(String((error as ErrorLike)?.message ?? ''))
}

/** Wrong user or password: retrying elsewhere will not help, the configuration must change. */
export function authenticationFailure(error: unknown): boolean {
  const sqlstate = code(error)
  return sqlstate === '28P01' || sqlstate === '28000'
}
