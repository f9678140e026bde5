/**
 * pgAdmin 4 with every node registered, as one container: what the
 * `ha: patroni` cluster (infra/patroni.ts) runs next to its nodes, built
 * from the same files as the plain cluster's pgAdmin (infra/files.ts).
 */
import * as docker from '@pulumi/docker'
import * as pulumi from '@pulumi/pulumi'
import { PGADMIN_PATHS, PGADMIN_UID, type PgadminServer, pgpassFile, serversJson } from './files.ts'
import { type ClusterPlan, DATABASE, PGADMIN_CONTAINER_PORT, SUPERUSER } from './options.ts'

export interface PgadminArgs {
  plan: ClusterPlan
  servers: PgadminServer[]
  postgresPassword: pulumi.Output<string>
  pgadminPassword: pulumi.Output<string>
  network: docker.Network
  dependsOn: pulumi.Resource[]
}

/** The pgAdmin container of `plan.pgadmin`, a child of `parent`. */
export function pgadminContainer(parent: pulumi.Resource, name: string, args: PgadminArgs): docker.Container {
  const { plan, servers, postgresPassword, pgadminPassword, network, dependsOn } = args
  const pgadmin = plan.pgadmin!
  const owned = { owner: PGADMIN_UID, group: '0' }
  const image = new docker.RemoteImage(`${name}-pgadmin-image`, { name: pgadmin.image, keepLocally: true }, { parent })
  return new docker.Container(
    `${name}-pgadmin`,
    {
      name: pgadmin.containerName,
      image: image.imageId,
      envs: [
        `PGADMIN_DEFAULT_EMAIL=${pgadmin.email}`,
        `PGADMIN_DEFAULT_PASSWORD_FILE=${PGADMIN_PATHS.password}`,
        `PGADMIN_SERVER_JSON_FILE=${PGADMIN_PATHS.serversJson}`,
        // Reload servers.json at every start: the list stays what Pulumi says.
        'PGADMIN_REPLACE_SERVERS_ON_STARTUP=True',
        `PGPASS_FILE=${PGADMIN_PATHS.pgpass}`,
        'PGADMIN_DISABLE_POSTFIX=True',
      ],
      uploads: [
        { file: PGADMIN_PATHS.serversJson, content: serversJson(servers, SUPERUSER, DATABASE), permissions: '0644', ...owned },
        {
          file: PGADMIN_PATHS.pgpass,
          content: postgresPassword.apply((password) => pgpassFile(servers, SUPERUSER, password)),
          permissions: '0600',
          ...owned,
        },
        { file: PGADMIN_PATHS.password, content: pgadminPassword, permissions: '0600', ...owned },
      ],
      networksAdvanced: [{ name: network.name }],
      ports: [{ internal: PGADMIN_CONTAINER_PORT, external: pgadmin.port, ip: pgadmin.bindAddress }],
      restart: 'unless-stopped',
      labels: [
        { label: 'pgfollow.cluster', value: plan.namePrefix },
        { label: 'pgfollow.node', value: 'pgadmin' },
      ],
    },
    { parent, deleteBeforeReplace: true, dependsOn },
  )
}
