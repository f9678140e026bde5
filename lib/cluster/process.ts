/**
 * Starting and stopping one PostgreSQL server. Servers are started with
 * pg_ctl (which daemonises and waits for "ready") and stopped by signalling
 * the pid in postmaster.pid: never by process name, so a test or a script
 * can only ever stop the servers it owns.
 */
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import process from 'node:process'
import { ClusterError } from '../tag/errors.ts'
import type { Binaries } from './binaries.ts'
import { asUser, type ServerUser } from './user.ts'

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a program to completion, as the server user when we are root. */
export function runAs(user: ServerUser | null, command: string, args: string[], env?: Record<string, string>): Promise<RunResult> {
  const [file, argv] = asUser(user, command, args)
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code) => resolvePromise({ code: code ?? 1, stdout, stderr }))
  })
}

/** The postmaster pid of a data dir, or null when none is recorded. */
export function readPid(dataDir: string): number | null {
  const file = join(dataDir, 'postmaster.pid')
  if (!existsSync(file)) return null
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0])
  return Number.isInteger(pid) && pid > 0 ? pid : null
}

/** Whether a pid is alive (signal 0 checks without sending anything). */
export function isAlive(pid: number | null): boolean {
  if (!pid) return false
  try {
    process.kill(pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  return !isZombie(pid)
}

/**
 * pg_ctl daemonises the postmaster, so its parent is init. An init that
 * reaps late (container init processes often do, every second or two)
 * leaves an exited server as a zombie that still answers signal 0: a zombie
 * has exited, and counting it as alive made every stop wait for the reaper.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X'
  } catch {
    return false // no /proc (not Linux) or the process is gone: signal 0 decided
  }
}

/** The running postmaster of a data dir, or null. */
export function runningPid(dataDir: string): number | null {
  const pid = readPid(dataDir)
  return isAlive(pid) ? pid : null
}

/** Last lines of a log file, for error messages. */
export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log written)'
  }
}

export interface StartOptions {
  binaries: Binaries
  user: ServerUser | null
  dataDir: string
  logFile: string
  name: string
  timeoutSeconds?: number
}

/** Starts a server and waits until it accepts connections; errors show its log. */
export async function startServer(options: StartOptions): Promise<number> {
  const { binaries, user, dataDir, logFile, name, timeoutSeconds = 60 } = options
  const result = await runAs(user, binaries.pgCtl, ['start', '-w', '-s', '-t', String(timeoutSeconds), '-D', dataDir, '-l', logFile])
  const pid = runningPid(dataDir)
  if (result.code !== 0 || !pid) {
    throw new ClusterError(
      `The ${name} server failed to start (data dir ${dataDir}). The end of its log, ${logFile}:\n${logTail(logFile)}\n${result.stderr.trim()}`,
    )
  }
  return pid
}

export type StopMode = 'smart' | 'fast' | 'immediate'
const SIGNALS: Record<StopMode, NodeJS.Signals> = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' }

/**
 * Stops the server of a data dir by its pid and waits for it to exit. A fast
 * shutdown that takes longer than the timeout becomes an immediate one.
 */
export async function stopServer(dataDir: string, mode: StopMode = 'fast', timeoutMs = 30_000): Promise<boolean> {
  const pid = runningPid(dataDir)
  if (!pid) return false
  process.kill(pid, SIGNALS[mode])
  if (await waitForExit(pid, timeoutMs)) return true
  if (mode !== 'immediate') process.kill(pid, SIGNALS.immediate)
  if (await waitForExit(pid, 10_000)) return true
  process.kill(pid, 'SIGKILL')
  return waitForExit(pid, 5_000)
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true
    await new Promise((r) => setTimeout(r, 25))
  }
  return !isAlive(pid)
}
