#!/usr/bin/env node
// Applies sql/migrations to a cluster (run with `npx zx` or plain `node`):
//   migrate.mjs [--cluster FILE] [--directory DIR] [--json]
// The cluster is found like everywhere else: --cluster, else PGFOLLOW_CLUSTER,
// else .pgfollow/cluster.json. lib/migrate.ts does the work: leader only,
// ledger with checksums, advisory lock, and it returns once replicas replayed.
import { argv, chalk, echo } from 'zx'
import { loadLibrary, runMain } from './script-runner.mjs'

const USAGE = `Usage: npx zx scripts/migrate.mjs [--cluster FILE] [--directory DIR] [--json]

  --cluster FILE     cluster descriptor (default: $PGFOLLOW_CLUSTER, else .pgfollow/cluster.json)
  --directory DIR    migration files NNN_name.sql (default: sql/migrations)
  --json             print one machine-readable result`

const FLAGS = ['cluster', 'directory', 'json', 'help', 'h']

const { pgfollow, ops } = await loadLibrary()
await runMain(main, pgfollow)

async function main() {
  if (argv.help || argv.h) {
    echo(USAGE)
    return 0
  }
  ops.assertOnlyKnownFlags(argv, FLAGS)
  for (const flag of ['cluster', 'directory']) {
    if (argv[flag] === true || argv[flag] === '') throw new pgfollow.ConfigError(`--${flag} takes a path. Run with --help for usage.`)
  }
  const file = argv.cluster === undefined ? undefined : String(argv.cluster)
  const descriptor = pgfollow.loadDescriptor(file)
  const started = Date.now()
  const result = await ops.migrate({
    leader: descriptor.leader,
    replicas: descriptor.replicas,
    directory: argv.directory === undefined ? undefined : String(argv.directory),
    onProgress: (message) => process.stderr.write(chalk.dim(`  ${message}\n`)),
  })
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  if (argv.json) {
    echo(JSON.stringify({ cluster: pgfollow.descriptorPath(file), ...result, seconds: Number(seconds) }, null, 2))
  } else if (result.applied.length > 0) {
    echo(chalk.green(`Applied ${result.applied.join(', ')} in ${seconds} s; ${descriptor.replicas.length} replica(s) have replayed them.`))
  } else {
    echo(`Nothing to apply: all ${result.alreadyApplied.length} migration(s) are in the ledger.`)
  }
  return 0
}
