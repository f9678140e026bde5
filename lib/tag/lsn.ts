/**
 * WAL positions (LSNs). PostgreSQL prints them as `X/Y` (two hex halves of a
 * 64-bit number); we keep them as bigint so they compare and subtract exactly.
 */

/** Parses `16/B374D848` into a bigint; null/undefined stay null. */
export function parseLsn(text: string | null | undefined): bigint | null {
  if (text == null) return null
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text)
  if (!match) throw new TypeError(`Not a WAL position (LSN): ${JSON.stringify(text)}`)
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)
}

/** Formats a bigint LSN the way PostgreSQL prints it. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/** Bytes from `from` to `to`, never negative (a replica cannot be ahead of the leader). */
export function lsnDistance(from: bigint | null, to: bigint | null): number {
  if (from == null || to == null || to <= from) return 0
  return Number(to - from)
}

/** The larger of two positions, null counting as "nothing yet". */
export function maxLsn(a: bigint | null, b: bigint | null): bigint | null {
  if (a == null) return b
  if (b == null) return a
  return a > b ? a : b
}
