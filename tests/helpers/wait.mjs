// Waits with a bound, for every test file: a condition that never comes or
// a promise that hangs becomes a failure that says what it waited for.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` every `stepMs` until it is truthy; past `timeoutMs` it throws, naming `what`. */
export async function until(check, timeoutMs, what, stepMs = 20) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(stepMs)
  }
}

/** Rejects when `promise` takes longer than `ms`: a hang becomes a failure that says what hung. */
export function within(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
