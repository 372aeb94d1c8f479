# Go toolchain for builder stages, from Debian's golang-go on the farm's Debian base.
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends golang-go git \
 && rm -rf /var/lib/apt/lists/*
# No C compiler is installed, so cgo is off: binaries come out static by default.
ENV GOPATH=/go \
    CGO_ENABLED=0 \
    PATH=/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /src
