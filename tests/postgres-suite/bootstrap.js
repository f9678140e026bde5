// Drop-in for postgres.js's tests/bootstrap.js: the roles and database it
// creates are made by run.mjs before the suite starts, so importing this
// file changes nothing. `exec` runs psql against the leader, for the few
// tests that toggle server settings (PG* variables come from run.mjs).
import { spawnSync } from 'node:child_process'

export function exec(cmd, args) {
  const { stderr } = spawnSync(cmd, args, { stdio: 'pipe', encoding: 'utf8' })
  if (stderr && !stderr.includes('already exists') && !stderr.includes('does not exist') && !stderr.includes('WARNING:')) {
    throw stderr
  }
}
