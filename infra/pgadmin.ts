/**
 * pgAdmin 4 with every node registered, as one container: what both
 * components (PostgresCluster, PatroniCluster) run next to their nodes.
 */
import * as docker from '@pulumi/docker'
import * as pulumi from '@pulumi/pulumi'
import { containerScript, PGADMIN_GID, PGADMIN_PATHS, PGADMIN_UID, type PgadminServer, pgadminUploadPath, pgpassFile, serversJson } from './files.ts'
import { type ClusterPlan, DATABASE, PGADMIN_CONTAINER_PORT, SUPERUSER } from './options.ts'

export interface PgadminArgs {
  plan: ClusterPlan
  /** The nodes as pgAdmin reaches them. */
  servers: PgadminServer[]
  postgresPassword: pulumi.Output<string>
  pgadminPassword: pulumi.Output<string>
  networkName: pulumi.Input<string>
  /** Docker host of the leader; undefined: the local engine. */
  provider?: docker.Provider
  dependsOn: pulumi.Resource[]
}

/** The pgAdmin container of `plan.pgadmin`, a child of `parent` named `<name>-pgadmin`. */
export function pgadminContainer(parent: pulumi.Resource, name: string, args: PgadminArgs): docker.Container {
  const { plan, servers, postgresPassword, pgadminPassword, networkName, provider, dependsOn } = args
  const pgadmin = plan.pgadmin!
  // Root-owned 0600 uploads: the wrapper entrypoint gives pgAdmin its own
  // copies, so nothing depends on the provider applying an owner.
  const upload = (readAt: string, content: pulumi.Input<string>) => ({ file: pgadminUploadPath(readAt), content, permissions: '0600' })
  return new docker.Container(
    `${name}-pgadmin`,
    {
      name: pgadmin.containerName,
      image: new docker.RemoteImage(`${name}-pgadmin-image`, { name: pgadmin.image, keepLocally: true }, { parent, provider }).imageId,
      // Root for the wrapper only: it runs the image's entrypoint as pgAdmin's user.
      user: 'root',
      entrypoints: [PGADMIN_PATHS.entrypoint],
      command: [PGADMIN_PATHS.imageEntrypoint],
      envs: [
        `PGADMIN_DEFAULT_EMAIL=${pgadmin.email}`,
        `PGADMIN_DEFAULT_PASSWORD_FILE=${PGADMIN_PATHS.password}`,
        `PGADMIN_SERVER_JSON_FILE=${PGADMIN_PATHS.serversJson}`,
        // Reload servers.json at every start: the list stays what Pulumi says.
        'PGADMIN_REPLACE_SERVERS_ON_STARTUP=True',
        `PGPASS_FILE=${PGADMIN_PATHS.pgpass}`,
        'PGADMIN_DISABLE_POSTFIX=True',
        `PGFOLLOW_SECRETS_IN=${PGADMIN_PATHS.uploads}`,
        `PGFOLLOW_SECRETS_DIR=${PGADMIN_PATHS.dir}`,
        `PGFOLLOW_PGADMIN_UID=${PGADMIN_UID}`,
        `PGFOLLOW_PGADMIN_GID=${PGADMIN_GID}`,
      ],
      uploads: [
        { file: PGADMIN_PATHS.entrypoint, content: containerScript('pgadmin-entrypoint.sh'), permissions: '0755' },
        upload(PGADMIN_PATHS.serversJson, serversJson(servers, SUPERUSER, DATABASE)),
        upload(PGADMIN_PATHS.pgpass, postgresPassword.apply((password) => pgpassFile(servers, SUPERUSER, password))),
        upload(PGADMIN_PATHS.password, pgadminPassword),
      ],
      tmpfs: { [PGADMIN_PATHS.dir]: 'rw,nosuid,nodev,noexec,size=1m,mode=0700' },
      networksAdvanced: [{ name: networkName }],
      ports: [{ internal: PGADMIN_CONTAINER_PORT, external: pgadmin.port, ip: pgadmin.bindAddress }],
      restart: 'unless-stopped',
      labels: [
        { label: 'pgfollow.cluster', value: plan.namePrefix },
        { label: 'pgfollow.node', value: 'pgadmin' },
      ],
    },
    { parent, provider, deleteBeforeReplace: true, dependsOn },
  )
}
