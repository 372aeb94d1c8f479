# Node.js alone, for the runtime stage of Node services.
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
# Node ships its own CA list; this adds the system bundle, which holds the extra CAs.
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt NODE_ENV=production
WORKDIR /app
