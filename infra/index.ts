/**
 * pgfollow on Docker: `pulumi up` creates the cluster, `pulumi destroy`
 * removes it. Config in (Pulumi.yaml declares every key), outputs out:
 * `pulumi stack output --json --show-secrets > ../.pgfollow/cluster.json`
 * writes the descriptor every script reads.
 */
import { PostgresCluster } from './cluster.ts'
import { readClusterArgs } from './config.ts'
import { PatroniCluster } from './patroni.ts'

const args = readClusterArgs()
const cluster = args.ha === 'patroni' ? new PatroniCluster('pgfollow', args) : new PostgresCluster('pgfollow', args)

/** postgres:// URL of the leader (secret). */
export const leader = cluster.leaderUrl
/** postgres:// URLs of the replicas, in order (secret). */
export const replicas = cluster.replicaUrls
/** Patroni REST endpoints (`ha: patroni` only): the tag follows Patroni's view through them. */
export const patroni = cluster instanceof PatroniCluster ? cluster.patroniUrls : undefined
/** pgAdmin, with every node registered (absent when pgadmin is off). */
export const pgadminUrl = cluster.pgadminUrl
/** pgAdmin login: this email and pgadminPassword (secret: pulumi stack output pgadminPassword --show-secrets). */
export const pgadminEmail = cluster.plan.pgadmin?.email
export const pgadminPassword = cluster.pgadminPassword
/** Node names: leader, replica1, ... (the replicas' application_names). */
export const nodes = cluster.nodeNames
/** Node name -> Docker container name, for docker logs / docker exec. */
export const containers = cluster.containerNames
