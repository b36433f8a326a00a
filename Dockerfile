# Kiln worker image: a build stage with the -dev packages, a slim runtime
# stage with only the shared libraries and the binaries. CI runs the same
# steps without Docker (tests/dockerfile_steps_test.sh): ./dev.sh for the
# build, and a check that deploy/docker/runtime-packages.txt provides every
# library the binaries load.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./dev.sh deps && ./dev.sh build

FROM debian:12-slim
COPY deploy/docker/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages.txt \
      apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /src/build/bin/kiln-worker /src/build/bin/kiln-sandbox /src/build/bin/kiln /usr/local/bin/
VOLUME /var/lib/kiln
EXPOSE 8980 8981
# Privileges: kiln-sandbox creates namespaces, mounts each action's root,
# writes cgroup limits and switches to build uids, so the container runs as
# root with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_CHOWN,
# CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_KILL, CAP_MKNOD, CAP_NET_ADMIN,
# CAP_SYS_CHROOT and CAP_SYS_RESOURCE, without a seccomp or AppArmor profile
# that forbids mount/unshare/pivot_root, and with /sys/fs/cgroup writable for
# limits, e.g.:
#   docker run --cap-add=SYS_ADMIN ... --security-opt seccomp=unconfined \
#     --security-opt apparmor=unconfined -p 8980:8980 -p 8981:8981 -v kiln:/var/lib/kiln kiln-worker
# (deploy/kubernetes/kiln-worker.yaml has the same as a securityContext.)
# TLS and tokens come from a mounted directory made by deploy/make-credentials.sh
# (tls.crt, tls.key, ca.crt, principals.json), e.g. -v "$PWD/creds:/etc/kiln:ro".
VOLUME /etc/kiln
HEALTHCHECK CMD ["/usr/local/bin/kiln", "health", "--server=localhost:8980", "--tls_ca=/etc/kiln/ca.crt"]
ENTRYPOINT ["/usr/local/bin/kiln-worker", "--listen=0.0.0.0:8980", "--tls_cert=/etc/kiln/tls.crt", "--tls_key=/etc/kiln/tls.key", "--token_file=/etc/kiln/principals.json", "--metrics_listen=0.0.0.0:8981", "--state_dir=/var/lib/kiln"]
