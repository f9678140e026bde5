# The configured postgres image plus Patroni: a node of the `ha: patroni`
# cluster (infra/patroni.ts). Patroni starts and stops PostgreSQL itself,
# so it is the container's process; its configuration is uploaded to
# /etc/patroni/patroni.yml by Pulumi (the same function the local HA mode
# writes it with, lib/topology.ts (patroniConfig)). Patroni talks to etcd's v3 API
# through its gRPC gateway, so no etcd client library is needed.
ARG BASE_IMAGE=postgres:18
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends patroni \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/patroni \
 && chown postgres:postgres /etc/patroni
USER postgres
ENTRYPOINT ["patroni"]
CMD ["/etc/patroni/patroni.yml"]
