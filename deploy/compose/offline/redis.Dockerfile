# Stand-in for the redis:7 image where no registry can be reached: Debian's Redis,
# started the way compose.yaml starts the official image.
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
