/**
 * `PostgresCluster`: one leader and N streaming replicas as Docker containers,
 * plus pgAdmin with every node registered. The replication settings, the
 * replicator role and the slots come from the shared module and SQL
 * (lib/topology.ts, sql/replication), the same ones the local cluster uses.
 */
import * as docker from '@pulumi/docker'
import * as pulumi from '@pulumi/pulumi'
import * as random from '@pulumi/random'
import { type ClusterDescriptor, REPLICATOR_ROLE, serverSettings, toServerFlags } from '../lib/topology.ts'
import { containerScript, hbaFile, NODE_PATHS, type PgadminServer, postgresUrl, replicationSql } from './files.ts'
import { pgadminContainer } from './pgadmin.ts'
import {
  type ClusterPlan,
  CONTAINER_PORT,
  DATABASE,
  type NodePlan,
  planCluster,
  type PostgresClusterArgs,
  SUPERUSER,
  VOLUME_MOUNT,
} from './options.ts'

export type { PostgresClusterArgs } from './options.ts'

/** The cluster descriptor: what scripts and `connect()` read (its shape is the topology module's). */
export type { ClusterDescriptor } from '../lib/topology.ts'

/** Seconds Pulumi waits for a node's health check after creating it. */
const LEADER_WAIT_SECONDS = 180
// A replica clones the leader before its first start; a big leader takes a while.
const REPLICA_WAIT_SECONDS = 600
/** Seconds PostgreSQL gets to stop (fast shutdown on SIGINT) before Docker kills it. */
const STOP_SECONDS = 60

/** Network, image and provider of one Docker host. */
interface Site {
  provider?: docker.Provider
  network: docker.Network
  image: docker.RemoteImage
}

export class PostgresCluster extends pulumi.ComponentResource {
  /** The validated options and node layout. */
  readonly plan: ClusterPlan
  /** The replication settings every node runs with (the shared module's serverSettings). */
  readonly settings: Record<string, string>
  readonly leaderUrl: pulumi.Output<string>
  readonly replicaUrls: pulumi.Output<string[]>
  /** `{ leader, replicas }`, secret: the descriptor scripts read. */
  readonly descriptor: pulumi.Output<ClusterDescriptor>
  readonly pgadminUrl: pulumi.Output<string | undefined>
  /** pgAdmin's login password (secret; generated unless given), undefined when pgAdmin is off. */
  readonly pgadminPassword?: pulumi.Output<string>
  /** `leader`, `replica1`, ...: also the replicas' application_names. */
  readonly nodeNames: string[]
  /** Node name -> Docker container name. */
  readonly containerNames: Record<string, string>
  readonly leaderContainer: docker.Container
  readonly replicaContainers: docker.Container[]
  readonly pgadminContainer?: docker.Container

  constructor(name: string, args: PostgresClusterArgs = {}, opts?: pulumi.ComponentResourceOptions) {
    // Check everything before the first resource exists.
    const plan = planCluster(args, name)
    super('pgfollow:db:PostgresCluster', name, {}, opts)
    this.plan = plan
    const { leader, replicas } = plan

    // The random provider marks `result` secret through the engine; say so
    // here too, so no path (mocks included) can see it as plain text.
    const generated = (key: string) =>
      pulumi.secret(new random.RandomPassword(`${name}-${key}`, { length: 32, special: false }, { parent: this }).result)
    const secret = (given: pulumi.Input<string> | undefined, key: string) => (given === undefined ? generated(key) : pulumi.secret(given))
    const postgresPassword = secret(args.postgresPassword, 'postgres-password')
    const replicatorPassword = secret(args.replicatorPassword, 'replicator-password')

    const sites = new Map<string, Site>()
    const siteOf = (node: NodePlan): Site => {
      const key = node.docker ?? ''
      let site = sites.get(key)
      if (!site) {
        site = this.createSite(name, key, plan)
        sites.set(key, site)
      }
      return site
    }

    this.settings = serverSettings({
      listen: '*',
      replicaNames: replicas.map((replica) => replica.name),
      synchronous: plan.synchronous,
      major: plan.major,
    })
    // The leader and every replica run the same flags: a standby needs some
    // settings at least as high as its leader's, and a promoted one keeps them.
    const command = ['docker-entrypoint.sh', 'postgres', ...toServerFlags(this.settings), '-c', `hba_file=${NODE_PATHS.hbaFile}`]
    const hba = hbaFile(plan.allowedCidrs)
    const entrypoint = containerScript('pgfollow-entrypoint.sh')
    const healthcheck = containerScript('pgfollow-healthcheck.sh')

    const nodeContainer = (
      node: NodePlan,
      extra: { envs: string[]; uploads: pulumi.Input<docker.types.input.ContainerUpload>[] },
      options: pulumi.CustomResourceOptions,
    ) => {
      const site = siteOf(node)
      const volume = new docker.Volume(`${name}-${node.name}-data`, { name: node.volumeName }, { parent: this, provider: site.provider })
      return new docker.Container(
        `${name}-${node.name}`,
        {
          name: node.containerName,
          hostname: node.alias,
          image: site.image.imageId,
          entrypoints: [NODE_PATHS.entrypoint],
          command,
          envs: [
            `PGDATA=${plan.pgdata}`,
            `PGFOLLOW_ROLE=${node.role}`,
            `PGFOLLOW_REPLICATOR=${REPLICATOR_ROLE}`,
            `PGFOLLOW_SECRETS_IN=${NODE_PATHS.secretsIn}`,
            `PGFOLLOW_SECRETS_DIR=${NODE_PATHS.secretsDir}`,
            `PGFOLLOW_PORT=${CONTAINER_PORT}`,
            `PGFOLLOW_SUPERUSER=${SUPERUSER}`,
            ...extra.envs,
          ],
          uploads: [
            { file: NODE_PATHS.entrypoint, content: entrypoint, permissions: '0755' },
            { file: NODE_PATHS.healthcheck, content: healthcheck, permissions: '0755' },
            { file: NODE_PATHS.hbaFile, content: hba, permissions: '0644' },
            ...extra.uploads,
          ],
          tmpfs: { [NODE_PATHS.secretsDir]: 'rw,nosuid,nodev,noexec,size=1m,mode=0700' },
          volumes: [{ volumeName: volume.name, containerPath: VOLUME_MOUNT }],
          networksAdvanced: [{ name: site.network.name, aliases: [node.alias] }],
          ports: [{ internal: CONTAINER_PORT, external: node.port, ip: node.bindAddress }],
          // Over TCP (during init the image runs a socket-only server), and a
          // replica only once it streams: one that cannot is not healthy, so
          // `pulumi up` fails instead of reporting a replica that lags forever.
          healthcheck: {
            tests: ['CMD', NODE_PATHS.healthcheck],
            interval: '5s',
            timeout: '10s',
            retries: 5,
            startPeriod: '30s',
          },
          wait: true,
          waitTimeout: node.role === 'leader' ? LEADER_WAIT_SECONDS : REPLICA_WAIT_SECONDS,
          restart: 'unless-stopped',
          stopSignal: 'SIGINT',
          stopTimeout: STOP_SECONDS,
          destroyGraceSeconds: STOP_SECONDS,
          labels: [
            { label: 'pgfollow.cluster', value: plan.namePrefix },
            { label: 'pgfollow.node', value: node.name },
          ],
        },
        // Names and published ports are fixed, and two servers must never
        // share a data volume: remove the old container before the new one.
        { parent: this, provider: site.provider, deleteBeforeReplace: true, ...options },
      )
    }

    const sql = replicationSql()
    this.leaderContainer = nodeContainer(
      leader,
      {
        envs: [
          `POSTGRES_USER=${SUPERUSER}`,
          // The image would create POSTGRES_DB on its temporary init server,
          // whose commits wait for standbys when synchronous replication is
          // on. With `postgres` it creates nothing; the init script creates
          // the cluster's database, committing locally.
          'POSTGRES_DB=postgres',
          `PGFOLLOW_DATABASE=${DATABASE}`,
          `POSTGRES_PASSWORD_FILE=${NODE_PATHS.secretsDir}/postgres_password`,
          `PGFOLLOW_SQL_DIR=${NODE_PATHS.sqlDir}`,
          `PGFOLLOW_SLOTS=${replicas.map((replica) => replica.slot).join(' ')}`,
        ],
        uploads: [
          { file: NODE_PATHS.initScript, content: containerScript('leader-init.sh'), permissions: '0755' },
          { file: `${NODE_PATHS.sqlDir}/replicator.sql`, content: sql['replicator.sql'], permissions: '0644' },
          { file: `${NODE_PATHS.sqlDir}/slot.sql`, content: sql['slot.sql'], permissions: '0644' },
          { file: `${NODE_PATHS.sqlDir}/database.sql`, content: sql['database.sql'], permissions: '0644' },
          { file: `${NODE_PATHS.secretsIn}/postgres_password`, content: postgresPassword, permissions: '0600' },
          { file: `${NODE_PATHS.secretsIn}/replicator_password`, content: replicatorPassword, permissions: '0600' },
        ],
      },
      {},
    )

    this.replicaContainers = replicas.map((replica) => {
      // Same Docker host: the leader's alias on the cluster network. Another
      // host: the leader's published port at its address.
      const local = replica.docker === leader.docker
      return nodeContainer(
        replica,
        {
          envs: [
            `PGFOLLOW_LEADER_HOST=${local ? leader.alias : leader.address.replace(/^\[|\]$/g, '')}`,
            `PGFOLLOW_LEADER_PORT=${local ? CONTAINER_PORT : leader.port}`,
            `PGFOLLOW_SLOT=${replica.slot}`,
            `PGFOLLOW_APPLICATION_NAME=${replica.name}`,
          ],
          uploads: [
            { file: `${NODE_PATHS.secretsIn}/replicator_password`, content: replicatorPassword, permissions: '0600' },
            // The health check logs in to ask whether the replica streams.
            { file: `${NODE_PATHS.secretsIn}/postgres_password`, content: postgresPassword, permissions: '0600' },
          ],
        },
        { dependsOn: [this.leaderContainer] },
      )
    })

    const nodeContainers = [this.leaderContainer, ...this.replicaContainers]
    if (plan.pgadmin) {
      const pgadminPassword = secret(args.pgadminPassword, 'pgadmin-password')
      this.pgadminPassword = pgadminPassword
      const servers: PgadminServer[] = plan.nodes.map((node) => {
        const local = node.docker === leader.docker
        return {
          name: node.name,
          host: local ? node.alias : node.address.replace(/^\[|\]$/g, ''),
          port: local ? CONTAINER_PORT : node.port,
          comment: node.role === 'leader'
            ? 'pgfollow leader (read-write)'
            : `pgfollow hot standby, streams from the leader through slot ${node.slot}`,
        }
      })
      this.pgadminContainer = pgadminContainer(this, name, {
        plan,
        servers,
        postgresPassword,
        pgadminPassword,
        networkName: siteOf(leader).network.name,
        provider: siteOf(leader).provider,
        dependsOn: nodeContainers,
      })
    }

    const urlOf = (node: NodePlan, password: string) =>
      postgresUrl({ user: SUPERUSER, password, host: node.address, port: node.port, database: DATABASE })
    this.leaderUrl = pulumi.secret(pulumi.all([postgresPassword, this.leaderContainer.id]).apply(([password]) => urlOf(leader, password)))
    this.replicaUrls = pulumi.secret(
      pulumi.all([postgresPassword, ...this.replicaContainers.map((container) => container.id)]).apply(([password]) =>
        replicas.map((replica) => urlOf(replica, password as string))
      ),
    )
    this.descriptor = pulumi.secret(pulumi.all([this.leaderUrl, this.replicaUrls]).apply(([leader, replicas]) => ({ leader, replicas })))
    this.pgadminUrl = this.pgadminContainer
      ? this.pgadminContainer.id.apply(() => `http://${plan.pgadmin!.address}:${plan.pgadmin!.port}`)
      : pulumi.output(undefined)
    this.nodeNames = plan.nodes.map((node) => node.name)
    this.containerNames = Object.fromEntries(plan.nodes.map((node) => [node.name, node.containerName]))

    this.registerOutputs({
      leader: this.leaderUrl,
      replicas: this.replicaUrls,
      pgadminUrl: this.pgadminUrl,
      nodes: this.nodeNames,
      containers: this.containerNames,
    })
  }

  /** Provider (for another Docker host), private network and PostgreSQL image of one host. */
  private createSite(name: string, dockerHost: string, plan: ClusterPlan): Site {
    // The local engine keeps plain resource names; other hosts get a suffix from their URL.
    const suffix = dockerHost === '' ? '' : `-${dockerHost.replace(/[^a-zA-Z0-9]+/g, '-').replace(/^-|-$/g, '')}`
    const provider = dockerHost === '' ? undefined : new docker.Provider(`${name}-docker${suffix}`, { host: dockerHost }, { parent: this })
    const network = new docker.Network(
      `${name}-net${suffix}`,
      { name: plan.networkName, driver: 'bridge', labels: [{ label: 'pgfollow.cluster', value: plan.namePrefix }] },
      { parent: this, provider },
    )
    // keepLocally: `pulumi destroy` leaves the image, other projects may use it.
    const image = new docker.RemoteImage(`${name}-postgres-image${suffix}`, { name: plan.image, keepLocally: true }, { parent: this, provider })
    return { provider, network, image }
  }
}
