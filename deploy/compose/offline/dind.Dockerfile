# Stand-in for the docker:dind image: Debian's Docker engine, run as the official
# image runs it (privileged; arguments are dockerd's).
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY dind-entrypoint.sh /usr/local/bin/dind-entrypoint
VOLUME /var/lib/docker
EXPOSE 2375
ENTRYPOINT ["dind-entrypoint"]
CMD ["dockerd", "--host=tcp://0.0.0.0:2375"]
