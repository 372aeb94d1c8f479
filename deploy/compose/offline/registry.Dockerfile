# Stand-in for the registry:2 image: Debian's distribution registry with the
# official image's defaults (port 5000, storage in /var/lib/registry).
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-registry \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/registry /etc/docker/registry
COPY registry-config.yml /etc/docker/registry/config.yml
EXPOSE 5000
ENTRYPOINT ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
