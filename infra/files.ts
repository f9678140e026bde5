/**
 * The text of every file the containers get: the container scripts (kept as
 * real shell files in infra/container, so sh -n and shellcheck can read them),
 * the shared replication SQL, pg_hba.conf, and pgAdmin's servers.json and
 * pgpass. Pure functions of the plan, so tests can read what a node receives.
 */
import { readFileSync } from 'node:fs'
import { hbaLines } from '../lib/topology.ts'
import { sqlText } from '../lib/ops/sqlfiles.ts'

/** Paths inside the node containers. */
export const NODE_PATHS = {
  entrypoint: '/usr/local/bin/pgfollow-entrypoint.sh',
  healthcheck: '/usr/local/bin/pgfollow-healthcheck.sh',
  initScript: '/docker-entrypoint-initdb.d/10-pgfollow-replication.sh',
  sqlDir: '/etc/pgfollow/sql',
  hbaFile: '/etc/pgfollow/pg_hba.conf',
  secretsIn: '/etc/pgfollow/secrets',
  // A tmpfs: secrets copied for the postgres user live in memory only.
  secretsDir: '/run/pgfollow',
}

/**
 * Paths inside the pgAdmin container. The files are uploaded root-owned to
 * `uploads` (the Docker provider applies no owner, whatever the upload says);
 * the wrapper entrypoint, started as root, copies them to `dir`, a tmpfs it
 * gives to pgAdmin's user, and runs the image's entrypoint as that user.
 */
export const PGADMIN_PATHS = {
  entrypoint: '/usr/local/bin/pgfollow-pgadmin-entrypoint.sh',
  /** The image's own entrypoint (dpage/pgadmin4: ENTRYPOINT ["/entrypoint.sh"]). */
  imageEntrypoint: '/entrypoint.sh',
  uploads: '/etc/pgfollow/pgadmin',
  dir: '/run/pgfollow',
  serversJson: '/run/pgfollow/servers.json',
  pgpass: '/run/pgfollow/pgpass',
  password: '/run/pgfollow/pgadmin_password',
}

/** Where the file pgAdmin reads at `readAt` is uploaded (root-owned). */
export function pgadminUploadPath(readAt: string): string {
  return `${PGADMIN_PATHS.uploads}/${readAt.slice(readAt.lastIndexOf('/') + 1)}`
}

/** The pgAdmin image runs as this uid (and gid 0): the wrapper hands the files to it. */
export const PGADMIN_UID = '5050'
export const PGADMIN_GID = '0'

/**
 * The server group in pgAdmin. `load-servers --replace` keeps the user's
 * first group, which pgAdmin creates as "Servers": putting the nodes there
 * shows one group holding them, not an empty "Servers" above ours.
 */
export const PGADMIN_GROUP = 'Servers'

/** The scripts in infra/container. */
export type ContainerScript = 'pgfollow-entrypoint.sh' | 'pgfollow-healthcheck.sh' | 'leader-init.sh' | 'pgadmin-entrypoint.sh'

/** A script from infra/container, as uploaded. */
export function containerScript(name: ContainerScript): string {
  return readFileSync(new URL(`./container/${name}`, import.meta.url), 'utf8')
}

/** The shared role, slot and database SQL, run by the leader's init script with psql -v. */
export function replicationSql(): { 'replicator.sql': string; 'slot.sql': string; 'database.sql': string } {
  return {
    'replicator.sql': sqlText('replication/replicator.sql'),
    'slot.sql': sqlText('replication/slot.sql'),
    'database.sql': sqlText('replication/database.sql'),
  }
}

/**
 * pg_hba.conf for every node (a replica is promoted with the same file).
 * `samenet` is the cluster network: a container's only interface is on it,
 * and connections to a published port from this host arrive from that
 * network's gateway. Clients on other machines (bindAddress 0.0.0.0) keep
 * their own address, so only `allowedCidrs` can admit them.
 * The local socket asks for a password too; the image's init exports one.
 */
export function hbaFile(allowedCidrs: string[]): string {
  const rules = ['samenet', ...allowedCidrs].flatMap((network) =>
    hbaLines(network)
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
  )
  return [
    '# Written by pgfollow infra/ (Pulumi); `pulumi up` replaces it.',
    '# TYPE  DATABASE     USER        ADDRESS      METHOD',
    'local   all          all                      scram-sha-256',
    ...rules,
    '',
  ].join('\n')
}

/** A server pgAdmin lists: where pgAdmin reaches the node, and what to call it. */
export interface PgadminServer {
  name: string
  host: string
  port: number
  comment: string
}

/**
 * servers.json in the format of pgAdmin's `setup.py load-servers`: ports as
 * integers, the password from a pgpass file (path relative to the user's
 * storage directory in server mode, where PGPASS_FILE is copied). sslmode
 * lives in ConnectionParameters only: pgAdmin ignores the top-level SSLMode
 * when ConnectionParameters is present.
 */
export function serversJson(servers: PgadminServer[], username: string, database: string): string {
  const entries = servers.map((server, i) => [
    String(i + 1),
    {
      Name: server.name,
      Group: PGADMIN_GROUP,
      Host: server.host,
      Port: server.port,
      MaintenanceDB: database,
      Username: username,
      Comment: server.comment,
      ConnectionParameters: { sslmode: 'prefer', connect_timeout: 10, passfile: '/.pgpass' },
    },
  ])
  return JSON.stringify({ Servers: Object.fromEntries(entries) }, null, 2) + '\n'
}

/** pgpass lines (host:port:database:user:password), `:` and `\` escaped. */
export function pgpassFile(servers: PgadminServer[], username: string, password: string): string {
  const escape = (value: string) => value.replace(/\\/g, '\\\\').replace(/:/g, '\\:')
  return servers.map((server) => [server.host, server.port, '*', username, password].map((v) => escape(String(v))).join(':')).join('\n') + '\n'
}

/** postgres://user:password@host:port/database, the descriptor's URL form: built by the shared topology module. */
export { postgresUrl } from '../lib/topology.ts'
