// CPU starvation of chosen processes, by duty cycle: SIGSTOP for `stopMs`,
// SIGCONT for `runMs`, again and again, until SIGTERM (or stdin closes),
// which always leaves them continued. Run as its own process so the load
// generator's busy event loop cannot stretch the cycle.
//   node bench/starve.mjs STOP_MS RUN_MS PID...
import process from 'node:process'

const [stopMs, runMs, ...pids] = process.argv.slice(2).map(Number)
const signal = (name) => {
  for (const pid of pids) {
    try {
      process.kill(pid, name)
    } catch {
      // gone: its connection closed
    }
  }
}
let running = true
const finish = () => {
  running = false
  signal('SIGCONT')
  process.exit(0)
}
process.on('SIGTERM', finish)
process.on('SIGINT', finish)
process.stdin.on('end', finish)
process.stdin.resume()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
while (running) {
  signal('SIGSTOP')
  await sleep(stopMs)
  signal('SIGCONT')
  await sleep(runMs)
}
