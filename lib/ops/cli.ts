/**
 * What the operator scripts (lagcheck, load, failover, start) share for
 * their command lines and terminals: durations and numbers from flags,
 * human units, plain-text tables and sparklines. No colours here: the
 * scripts paint with zx's chalk, which knows whether stdout is a terminal.
 */
import { realpathSync } from 'node:fs'
import { relative, resolve } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../tag/errors.ts'
import { FOLLOW_PROBLEMS, type FollowProblem } from '../tag/follow.ts'

/**
 * The arguments after the script's own path: `node script.mjs --once` and
 * `npx zx script.mjs --once` put a different number of words before it.
 */
export function scriptArgs(scriptUrl: string, argv: string[] = process.argv): string[] {
  const self = realpath(fileURLToPath(scriptUrl))
  const index = argv.findIndex((arg, i) => i > 0 && realpath(resolve(arg)) === self)
  return argv.slice(index > 0 ? index + 1 : 2)
}

function realpath(path: string): string {
  try {
    return realpathSync(path)
  } catch {
    return path
  }
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }

/**
 * `30s`, `1.5s`, `500ms`, `2m`, `1h`, or a bare number of seconds, in ms.
 * The flag name goes into the error, which says how to write it.
 */
export function parseDuration(value: unknown, flag: string): number {
  const text = String(value).trim()
  const match = DURATION.exec(text)
  const ms = match ? Number(match[1]) * UNIT_MS[match[2] ?? 's'] : NaN
  if (value === true || !(ms > 0) || !Number.isFinite(ms)) {
    throw new ConfigError(`${flag} takes a duration like 500ms, 1s, 30s or 2m, not "${value === true ? '' : text}".`)
  }
  return ms
}

/** A whole number >= min from a flag; the error names the flag. */
export function parseCount(value: unknown, flag: string, min = 0): number {
  const number = Number(value)
  if (value === true || value === '' || !Number.isInteger(number) || number < min) {
    throw new ConfigError(`${flag} takes a whole number >= ${min}, not "${value === true ? '' : value}".`)
  }
  return number
}

/** One value out of a fixed list; the error lists them. */
export function parseChoice<T extends string>(value: unknown, flag: string, choices: readonly T[]): T {
  if (!choices.includes(value as T)) {
    throw new ConfigError(`${flag} takes one of ${choices.join(', ')}, not "${value === true ? '' : value}".`)
  }
  return value as T
}

/** Flags a script does not know are an error, not silently ignored (a typo would change nothing). */
export function assertKnownFlags(argv: Record<string, unknown>, known: readonly string[]): void {
  const allowed = new Set(['_', '--', ...known])
  const unknown = Object.keys(argv).filter((key) => !allowed.has(key))
  if (unknown.length > 0) {
    throw new ConfigError(`Unknown flag ${unknown.map((key) => `--${key}`).join(', ')}. Run with --help for usage.`)
  }
}

/** For scripts that take flags only: unknown flags and stray words are errors. */
export function assertOnlyKnownFlags(argv: Record<string, unknown> & { _?: unknown[] }, known: readonly string[]): void {
  assertKnownFlags(argv, known)
  if (argv._ && argv._.length > 0) throw new ConfigError(`Unexpected argument ${argv._.join(' ')}. Run with --help for usage.`)
}

/** 0 B, 840 B, 12.3 kB, 4.0 MB (powers of 1024, as PostgreSQL's pg_size_pretty). */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '-'
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`
}

/** 0 ms, 3.2 ms, 850 ms, 2.4 s. */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-'
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`
  if (ms > 0 && ms < 10) return `${ms.toFixed(1)} ms`
  return `${Math.round(ms)} ms`
}

/** ANSI colour codes removed: what the terminal shows, for measuring widths. */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex -- ESC starts every ANSI colour sequence
  return text.replace(/\x1b\[[0-9;]*m/g, '')
}

/**
 * Columns padded to their widest cell (colour codes do not count). Columns
 * named in `right` are right-aligned, which is how numbers read best.
 */
export function formatTable(header: string[], rows: unknown[][], right: readonly number[] = []): string[] {
  const cells = [header, ...rows].map((row) => row.map((cell) => (cell === null || cell === undefined ? '-' : String(cell))))
  const widths = header.map((_, i) => Math.max(...cells.map((row) => stripAnsi(row[i] ?? '').length)))
  return cells.map((row) =>
    row
      .map((cell, i) => {
        const pad = ' '.repeat(widths[i] - stripAnsi(cell).length)
        return right.includes(i) ? pad + cell : cell + pad
      })
      .join('  ')
      .trimEnd()
  )
}

const BARS = '▁▂▃▄▅▆▇█'

/**
 * A sparkline of the last `width` values, scaled to their maximum (or
 * `max`): all zeros draw a flat floor, so "no lag" looks like nothing.
 */
export function sparkline(values: number[], width = 30, max?: number): string {
  const shown = values.slice(-width)
  const top = max ?? Math.max(0, ...shown)
  return shown
    .map((value) => (top <= 0 || !(value > 0) ? BARS[0] : BARS[Math.min(BARS.length - 1, Math.ceil((value / top) * (BARS.length - 1)))]))
    .join('')
}

/** A path for messages: relative to `cwd` when inside it ('.' for itself), else absolute. */
export function displayPath(path: string, cwd: string = process.cwd()): string {
  const shown = relative(cwd, resolve(path))
  return shown === '' ? '.' : shown.startsWith('..') ? resolve(path) : shown
}

/** How a node state should look: good (leader, streaming), bad (down, stopped) or a warning (anything else). */
export type StateTone = 'good' | 'bad' | 'warn'

/** The tone of a node state, for the scripts' colours: one judgement for status, lagcheck and failover. */
export function stateTone(state: string): StateTone {
  if (state === 'leader' || state === 'streaming') return 'good'
  if (state === 'down' || state === 'stopped' || FOLLOW_PROBLEMS.includes(state as FollowProblem)) return 'bad'
  return 'warn'
}

/** The p-th percentile (0-100) of ascending values, nearest rank; 0 for none. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}
