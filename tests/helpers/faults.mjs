// What the fault tests share: latency figures, the one-line `measured:`
// reports the README quotes, and fake servers that misbehave. Bounded waits
// are in wait.mjs.
import { createServer } from 'node:net'
import process from 'node:process'
import { percentile as sortedPercentile } from 'pgfollow/ops'
import { sleep } from './wait.mjs'

/** The p-th percentile (nearest rank) of unsorted numbers; 0 for none. */
export function percentile(values, p) {
  return sortedPercentile([...values].sort((a, b) => a - b), p)
}

export const ms = (value) => `${value.toFixed(1)} ms`

/** One line per case, prefixed so the runner's output can be grepped for the README's numbers. */
export function measured(text) {
  console.log(`measured: ${text}`)
}

/**
 * Runs `count` loops of `step` until `stop()` is called or `maxMs` passes
 * (so a stuck case cannot run forever). Every call is timed; failures are
 * kept, not thrown, so a test can assert that there were none.
 */
export function loops(count, step, { maxMs = 30_000, pauseMs = 0 } = {}) {
  const samples = []
  const errors = []
  const deadline = Date.now() + maxMs
  let running = true
  const workers = Array.from({ length: count }, async (_, worker) => {
    while (running && Date.now() < deadline) {
      const started = performance.now()
      const at = Date.now()
      try {
        const value = await step(worker)
        samples.push({ at, ms: performance.now() - started, value })
      } catch (error) {
        errors.push({ at, ms: performance.now() - started, error })
      }
      if (pauseMs > 0) await sleep(pauseMs)
    }
  })
  return {
    samples,
    errors,
    async stop() {
      running = false
      await Promise.all(workers)
    },
  }
}

/** `code: message` of each error, for assertion messages. */
export function describeErrors(errors, limit = 5) {
  return errors.slice(0, limit).map(({ error }) => `${error?.code ?? error?.name}: ${error?.message}`)
}

/**
 * A TCP server on 127.0.0.1 that accepts connections and never answers:
 * a replica whose process is alive but wedged, or a black-holing proxy.
 */
export async function hangingServer() {
  const sockets = new Set()
  let accepted = 0
  const server = createServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  return {
    port,
    /** How many connections it has accepted so far (and kept hanging). */
    get accepted() {
      return accepted
    },
    url: (user = 'postgres', password = 'x', database = 'pgfollow') =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`,
    close() {
      for (const socket of sockets) socket.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/** Samples RSS and heap every `everyMs` while `fn` runs; returns the peaks above the starting point. */
export async function peakMemoryDuring(fn, everyMs = 20) {
  globalThis.gc?.()
  const start = process.memoryUsage()
  let rss = start.rss
  let heap = start.heapUsed
  const timer = setInterval(() => {
    const now = process.memoryUsage()
    rss = Math.max(rss, now.rss)
    heap = Math.max(heap, now.heapUsed)
  }, everyMs)
  try {
    const result = await fn()
    const end = process.memoryUsage()
    rss = Math.max(rss, end.rss)
    heap = Math.max(heap, end.heapUsed)
    return { result, rssGrowth: rss - start.rss, heapGrowth: heap - start.heapUsed, startRss: start.rss }
  } finally {
    clearInterval(timer)
  }
}

export const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
