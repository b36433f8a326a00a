# Kiln worker image: a build stage with the -dev packages, a slim runtime stage.
# The build stage runs the same ./dev.sh the README uses, so its steps are the
# ones CI proves on every run.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./dev.sh deps && ./dev.sh build

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libssl3 libzstd1 \
      libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 libspdlog1.10 libfmt9 \
      libseccomp2 libcap2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /usr/local/bin/
# The storage-only worker needs no privileges; the sandbox (later) will need
# CAP_SYS_ADMIN and friends, documented in deploy/.
RUN useradd --system --home-dir /var/lib/kiln --create-home kiln
USER kiln
VOLUME /var/lib/kiln
EXPOSE 8980 8981
ENTRYPOINT ["/usr/local/bin/kiln-worker", "--listen=0.0.0.0:8980", "--metrics_listen=0.0.0.0:8981", "--state_dir=/var/lib/kiln"]
