# Stand-in for the docker:dind image: Debian's Docker engine, run as the official
# image runs it (privileged; arguments are dockerd's), its entrypoint under the
# same name.
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY dind-entrypoint.sh /usr/local/bin/dockerd-entrypoint.sh
VOLUME /var/lib/docker
ENTRYPOINT ["dockerd-entrypoint.sh"]
CMD ["dockerd", "--host=unix:///var/run/docker.sock"]
