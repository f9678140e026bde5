// What every script does around its own work: load the compiled library
// (naming the fix when dist/ is missing, the one error we can name before it
// loads) and turn the outcome of main() into an exit code. pgfollow's own
// errors are expected and say what to do: one red line. Anything else is a
// bug: its stack.
import process from 'node:process'
import { chalk } from 'zx'

/**
 * `{ pgfollow, ops, cluster, topology }`: the `pgfollow`, `pgfollow/ops`,
 * `pgfollow/cluster` and `pgfollow/topology` modules from dist/, with the
 * scripts' `paint` and `table` on top of them.
 */
export async function loadLibrary() {
  try {
    const [pgfollow, ops, cluster, topology] = await Promise.all([
      import('pgfollow'),
      import('pgfollow/ops'),
      import('pgfollow/cluster'),
      import('pgfollow/topology'),
    ])
    return { pgfollow, ops, cluster, topology, paint: (state) => paint(state, ops), table: (header, rows) => table(ops, header, rows) }
  } catch (error) {
    if (error?.code === 'ERR_MODULE_NOT_FOUND' && /dist/.test(error.message)) {
      console.error(chalk.red('pgfollow is not built (no dist/): run `npm run build` first (`npm ci` does it too).'))
      process.exit(1)
    }
    throw error
  }
}

/** A node state in the colour of its tone (pgfollow/ops stateTone decides the tone). */
function paint(state, ops) {
  const tone = ops.stateTone(state)
  return tone === 'good' ? chalk.green(state) : tone === 'bad' ? chalk.red(state) : chalk.yellow(state)
}

/** pgfollow/ops formatTable with a bold header, as one string. */
function table(ops, header, rows) {
  const [head, ...body] = ops.formatTable(header, rows)
  return [chalk.bold(head), ...body].join('\n')
}

/** Prints an error the way every script does. */
export function reportError(error, pgfollow) {
  if (pgfollow && error instanceof pgfollow.PgfollowError) console.error(chalk.red(error.message))
  else console.error(chalk.red(error?.stack ?? String(error)))
}

/** Runs main(); its number is the exit code, a thrown error exits with `failureCode`. */
export async function runMain(main, pgfollow, failureCode = 1) {
  try {
    process.exitCode = await main()
  } catch (error) {
    reportError(error, pgfollow)
    process.exitCode = failureCode
  }
}
