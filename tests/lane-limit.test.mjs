// @deno
// A replica's read lanes, adapted by paired trials: one more lane is kept only when it serves more,
// one fewer when it serves about as much; a load trend weighs on both sides alike. No cluster.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const lib = typeof Deno !== 'undefined' ? '../lib/' : '../dist/'
const ext = typeof Deno !== 'undefined' ? '.ts' : '.js'
const { LaneLimit, START_LANES, TRIAL_PAIRS } = await import(`${lib}tag/lane-limit${ext}`)

const limits = suite('read lanes per replica')
const TRIAL_WINDOWS = 2 * TRIAL_PAIRS + 1

/** Feeds windows whose reads/s is `served(lanes, window)`; returns the lane count after each window. */
function run(limit, windows, served, { saturated = () => true, mayStart = () => true } = {}) {
  const counts = []
  for (let w = 0; w < windows; w++) {
    limit.observe(served(limit.current, w), saturated(w), mayStart(w))
    counts.push(limit.current)
  }
  return counts
}

limits('starts with a few lanes, never more than the cap', () => {
  assert.is(new LaneLimit(10).current, START_LANES)
  assert.is(new LaneLimit(1).current, 1)
})

limits('a server that serves more with more lanes gets them, up to the cap', () => {
  const limit = new LaneLimit(6)
  const counts = run(limit, 10 * TRIAL_WINDOWS, (lanes) => 1000 * lanes)
  assert.is(limit.kept, 6)
  assert.ok(counts.every((count) => count <= 6))
})

limits('a saturated server (more lanes serve less) settles at the fewest that serve the most', () => {
  // Serves most at 2 lanes: each lane beyond costs 8 %, one fewer halves it.
  const limit = new LaneLimit(10, 5)
  run(limit, 40 * TRIAL_WINDOWS, (lanes) => (lanes === 1 ? 5000 : 10000 * (1 - 0.08 * (lanes - 2))))
  assert.is(limit.kept, 2)
})

limits('one fewer lane serving as much is kept', () => {
  const limit = new LaneLimit(10, 4)
  run(limit, 20 * TRIAL_WINDOWS, () => 10000)
  assert.is(limit.kept, 1)
})

limits('a rising load (a warming JIT) is not taken for a gain', () => {
  // Reads/s grow 10 % a window whatever the lanes: the paired trial sees no gain from one more lane.
  const limit = new LaneLimit(10)
  run(limit, 3 * TRIAL_WINDOWS, (_lanes, w) => 1000 * 1.1 ** w)
  assert.ok(limit.kept <= START_LANES, `lanes: ${limit.kept}`)
})

limits('an idle replica keeps its lanes; a trial ends when demand stops', () => {
  const idle = new LaneLimit(10)
  run(idle, 50, () => 100, { saturated: () => false })
  assert.is(idle.current, START_LANES)
  const stopped = new LaneLimit(10)
  stopped.observe(1000, true, true)
  assert.ok(stopped.inTrial)
  stopped.observe(2000, false, true)
  assert.not.ok(stopped.inTrial)
  assert.is(stopped.current, START_LANES)
})

limits('no trial starts while another replica runs one', () => {
  const limit = new LaneLimit(10)
  run(limit, 20, (lanes) => 1000 * lanes, { mayStart: () => false })
  assert.is(limit.current, START_LANES)
  assert.not.ok(limit.inTrial)
})

limits.run()
