# Python 3 alone, for the runtime stage of Python services (a venv copied in works).
ARG BASE_IMAGE=farm-base/debian:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PYTHONUNBUFFERED=1
WORKDIR /app
