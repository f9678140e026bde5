/**
 * `PatroniCluster` (`ha: patroni`): the same nodes as `PostgresCluster`,
 * each running Patroni in an image built from the configured postgres
 * image (infra/container/patroni.Dockerfile), with one etcd container as
 * Patroni's store, and pgAdmin as before. Each node's patroni.yml comes from
 * lib/topology.ts (patroniConfig), the function the local `up --ha` runs for real;
 * only the addresses differ (the cluster network inside, published ports
 * for clients, which Patroni reports as the member tag pgfollow_address).
 */
import { fileURLToPath } from 'node:url'
import * as docker from '@pulumi/docker'
import * as pulumi from '@pulumi/pulumi'
import * as random from '@pulumi/random'
import { type ClusterDescriptor, patroniYaml } from '../lib/topology.ts'
import { postgresUrl } from './files.ts'
import { pgadminContainer } from './pgadmin.ts'
import {
  ClusterConfigError,
  type ClusterPlan,
  CONTAINER_PORT,
  DATABASE,
  DEFAULTS,
  HA_MODES,
  type NodePlan,
  planCluster,
  type PostgresClusterArgs,
  SUPERUSER,
  VOLUME_MOUNT,
} from './options.ts'

/** Patroni's REST port inside each node container. */
export const PATRONI_CONTAINER_PORT = 8008
/** etcd's client port on the cluster network. */
export const ETCD_PORT = 2379
/** The postgres user of Debian-based postgres images (the Dockerfile needs one: it installs Debian's patroni). */
const POSTGRES_OWNER = { owner: '999', group: '999' }
/** Where Patroni reads its configuration inside a node. */
export const PATRONI_CONFIG = '/etc/patroni/patroni.yml'

/** The descriptor of a Patroni cluster: the topology's, with its Patroni endpoints always there. */
export type PatroniDescriptor = Required<ClusterDescriptor>

export class PatroniCluster extends pulumi.ComponentResource {
  readonly plan: ClusterPlan
  /** Published Patroni REST port per node, node order. */
  readonly patroniPorts: number[]
  readonly leaderUrl: pulumi.Output<string>
  readonly replicaUrls: pulumi.Output<string[]>
  readonly patroniUrls: pulumi.Output<string[]>
  /** `{ leader, replicas, patroni }`, secret: the descriptor scripts and the tag read. */
  readonly descriptor: pulumi.Output<PatroniDescriptor>
  readonly pgadminUrl: pulumi.Output<string | undefined>
  readonly pgadminPassword?: pulumi.Output<string>
  readonly nodeNames: string[]
  readonly containerNames: Record<string, string>
  readonly image: docker.Image
  readonly etcdContainer: docker.Container
  readonly leaderContainer: docker.Container
  readonly replicaContainers: docker.Container[]
  readonly pgadminContainer?: docker.Container

  constructor(name: string, args: PostgresClusterArgs = {}, opts?: pulumi.ComponentResourceOptions) {
    const plan = planCluster(args, name)
    const patroniPorts = planPatroniPorts(plan, args)
    super('pgfollow:db:PatroniCluster', name, {}, opts)
    this.plan = plan
    this.patroniPorts = patroniPorts

    const generated = (key: string) =>
      pulumi.secret(new random.RandomPassword(`${name}-${key}`, { length: 32, special: false }, { parent: this }).result)
    const secret = (given: pulumi.Input<string> | undefined, key: string) => (given === undefined ? generated(key) : pulumi.secret(given))
    const postgresPassword = secret(args.postgresPassword, 'postgres-password')
    const replicatorPassword = secret(args.replicatorPassword, 'replicator-password')

    const network = new docker.Network(
      `${name}-net`,
      { name: plan.networkName, driver: 'bridge', labels: [{ label: 'pgfollow.cluster', value: plan.namePrefix }] },
      { parent: this },
    )
    const labels = (node: string) => [{ label: 'pgfollow.cluster', value: plan.namePrefix }, { label: 'pgfollow.node', value: node }]

    const etcdAlias = `${plan.namePrefix}-etcd`
    const etcdImage = new docker.RemoteImage(`${name}-etcd-image`, { name: args.etcdImage ?? DEFAULTS.etcdImage, keepLocally: true }, {
      parent: this,
    })
    this.etcdContainer = new docker.Container(
      `${name}-etcd`,
      {
        name: etcdAlias,
        hostname: etcdAlias,
        image: etcdImage.imageId,
        command: [
          'etcd',
          '--name=pgfollow',
          '--data-dir=/etcd-data',
          `--listen-client-urls=http://0.0.0.0:${ETCD_PORT}`,
          `--advertise-client-urls=http://${etcdAlias}:${ETCD_PORT}`,
          '--listen-peer-urls=http://0.0.0.0:2380',
          `--initial-advertise-peer-urls=http://${etcdAlias}:2380`,
          `--initial-cluster=pgfollow=http://${etcdAlias}:2380`,
        ],
        // Patroni's store holds nothing that outlives the cluster: no volume, no published port.
        networksAdvanced: [{ name: network.name, aliases: [etcdAlias] }],
        restart: 'unless-stopped',
        labels: labels('etcd'),
      },
      { parent: this, deleteBeforeReplace: true },
    )

    // The node image: the configured postgres image plus Debian's patroni, built on the engine.
    this.image = new docker.Image(
      `${name}-patroni-image`,
      {
        imageName: `${plan.namePrefix}-patroni:${plan.image.replace(/[^a-zA-Z0-9_.-]+/g, '-')}`,
        build: {
          context: fileURLToPath(new URL('./container', import.meta.url)),
          dockerfile: fileURLToPath(new URL('./container/patroni.Dockerfile', import.meta.url)),
          args: { BASE_IMAGE: plan.image },
        },
        skipPush: true,
      },
      { parent: this },
    )

    const nodeContainer = (node: NodePlan, index: number, options: pulumi.CustomResourceOptions) => {
      const volume = new docker.Volume(`${name}-${node.name}-data`, { name: node.volumeName }, { parent: this })
      const config = pulumi.secret(
        pulumi.all([postgresPassword, replicatorPassword]).apply(([superuserPassword, replicator]) =>
          patroniYaml(patroniNodeOptions(plan, node, { etcdHost: etcdAlias, superuserPassword, replicatorPassword: replicator }))
        ),
      )
      return new docker.Container(
        `${name}-${node.name}`,
        {
          name: node.containerName,
          hostname: node.alias,
          image: this.image.imageName,
          uploads: [{ file: PATRONI_CONFIG, content: config, permissions: '0600', ...POSTGRES_OWNER }],
          volumes: [{ volumeName: volume.name, containerPath: VOLUME_MOUNT }],
          networksAdvanced: [{ name: network.name, aliases: [node.alias] }],
          ports: [
            { internal: CONTAINER_PORT, external: node.port, ip: node.bindAddress },
            { internal: PATRONI_CONTAINER_PORT, external: patroniPorts[index], ip: node.bindAddress },
          ],
          healthcheck: {
            tests: ['CMD', 'pg_isready', '-h', '127.0.0.1', '-p', String(CONTAINER_PORT), '-U', SUPERUSER, '-d', DATABASE],
            interval: '5s',
            timeout: '5s',
            retries: 5,
            startPeriod: '60s',
          },
          wait: true,
          waitTimeout: 600,
          restart: 'unless-stopped',
          // Patroni shuts PostgreSQL down (fast) on SIGTERM and releases the leader key.
          stopSignal: 'SIGTERM',
          stopTimeout: 60,
          destroyGraceSeconds: 60,
          labels: labels(node.name),
        },
        { parent: this, deleteBeforeReplace: true, ...options, dependsOn: [this.etcdContainer, ...(options.dependsOn as pulumi.Resource[] ?? [])] },
      )
    }

    // The first node bootstraps the cluster (initdb); the others clone it, so they start after it.
    this.leaderContainer = nodeContainer(plan.leader, 0, {})
    this.replicaContainers = plan.replicas.map((replica, i) => nodeContainer(replica, i + 1, { dependsOn: [this.leaderContainer] }))
    const nodeContainers = [this.leaderContainer, ...this.replicaContainers]

    if (plan.pgadmin) {
      this.pgadminPassword = secret(args.pgadminPassword, 'pgadmin-password')
      this.pgadminContainer = pgadminContainer(this, name, {
        plan,
        servers: plan.nodes.map((node) => ({
          name: node.name,
          host: node.alias,
          port: CONTAINER_PORT,
          comment: 'pgfollow node managed by Patroni: its role follows Patroni (see /cluster on its REST API)',
        })),
        postgresPassword,
        pgadminPassword: this.pgadminPassword,
        networkName: network.name,
        dependsOn: nodeContainers,
      })
    }

    const urlOf = (node: NodePlan, password: string) =>
      postgresUrl({ user: SUPERUSER, password, host: node.address, port: node.port, database: DATABASE })
    this.leaderUrl = pulumi.secret(pulumi.all([postgresPassword, this.leaderContainer.id]).apply(([password]) => urlOf(plan.leader, password)))
    this.replicaUrls = pulumi.secret(
      pulumi.all([postgresPassword, ...this.replicaContainers.map((container) => container.id)]).apply(([password]) =>
        plan.replicas.map((replica) => urlOf(replica, password as string))
      ),
    )
    this.patroniUrls = pulumi.all(nodeContainers.map((container) => container.id)).apply(() =>
      plan.nodes.map((node, i) => `http://${node.address}:${patroniPorts[i]}`)
    )
    this.descriptor = pulumi.secret(
      pulumi.all([this.leaderUrl, this.replicaUrls, this.patroniUrls]).apply(([leader, replicas, patroni]) => ({ leader, replicas, patroni })),
    )
    this.pgadminUrl = this.pgadminContainer
      ? this.pgadminContainer.id.apply(() => `http://${plan.pgadmin!.address}:${plan.pgadmin!.port}`)
      : pulumi.output(undefined)
    this.nodeNames = plan.nodes.map((node) => node.name)
    this.containerNames = Object.fromEntries([...plan.nodes.map((node) => [node.name, node.containerName]), ['etcd', etcdAlias]])

    this.registerOutputs({
      leader: this.leaderUrl,
      replicas: this.replicaUrls,
      patroni: this.patroniUrls,
      pgadminUrl: this.pgadminUrl,
      nodes: this.nodeNames,
      containers: this.containerNames,
    })
  }
}

/**
 * The options of one node's patroni.yml: the cluster network inside (the
 * node's alias, etcd's alias), the published port as the address clients
 * use, and pg_hba for the loopback (Patroni's own connection), the cluster
 * network and allowedCidrs.
 */
export function patroniNodeOptions(
  plan: ClusterPlan,
  node: NodePlan,
  secrets: { etcdHost: string; superuserPassword: string; replicatorPassword: string },
) {
  return {
    name: node.name,
    restListen: `0.0.0.0:${PATRONI_CONTAINER_PORT}`,
    restConnect: `${node.alias}:${PATRONI_CONTAINER_PORT}`,
    pgListen: `0.0.0.0:${CONTAINER_PORT}`,
    pgConnect: `${node.alias}:${CONTAINER_PORT}`,
    clientAddress: `${node.address}:${node.port}`,
    dataDir: plan.pgdata,
    binDir: '',
    pgpass: '/tmp/pgpass',
    etcdHosts: [`${secrets.etcdHost}:${ETCD_PORT}`],
    superuser: SUPERUSER,
    superuserPassword: secrets.superuserPassword,
    replicatorPassword: secrets.replicatorPassword,
    networks: ['127.0.0.1/32', 'samenet', ...plan.allowedCidrs],
    synchronous: plan.synchronous,
    major: plan.major,
  }
}

/** Published Patroni REST ports: patroniPort, then one apart; checked against every other published port. */
function planPatroniPorts(plan: ClusterPlan, args: PostgresClusterArgs): number[] {
  const ha = args.ha ?? 'patroni'
  if (!HA_MODES.includes(ha)) throw new ClusterConfigError(`ha is "${ha}": use one of ${HA_MODES.join(', ')} (pulumi config set ha patroni)`)
  const remote = plan.nodes.filter((node) => node.docker !== undefined)
  if (remote.length > 0) {
    throw new ClusterConfigError(
      `ha patroni runs every node on one Docker engine (etcd is reached over the cluster network): remove hosts.${remote[0].name}.docker`,
    )
  }
  const first = args.patroniPort ?? DEFAULTS.patroniPort
  if (!Number.isInteger(first) || first < 1 || first + plan.nodes.length - 1 > 65535) {
    throw new ClusterConfigError(`patroniPort must be a port number (1-65535) with room for ${plan.nodes.length} nodes, not ${first}`)
  }
  const ports = plan.nodes.map((_, i) => first + i)
  const taken = [...plan.nodes.map((node) => node.port), ...(plan.pgadmin ? [plan.pgadmin.port] : [])]
  const clash = ports.find((port) => taken.includes(port))
  if (clash !== undefined) {
    throw new ClusterConfigError(`patroniPort: port ${clash} is also a node's or pgAdmin's port; choose another (pulumi config set patroniPort 8008)`)
  }
  return ports
}
