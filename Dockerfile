# The farm's own image: the web app, the build worker and the CLI, run as a user
# without privileges. `docker run IMAGE web` or `IMAGE worker`; any farm command.
#
# BASE_IMAGE is a build argument so the image builds where no registry can be
# reached, from a Debian base made locally (`farm base-images build`):
#   BASE_IMAGE=farm-base/debian:bookworm
ARG BASE_IMAGE=debian:bookworm-slim

# Builder: the farm and its dependencies, installed into a virtual environment.
FROM ${BASE_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# pip trusts the system's CA bundle, which holds any extra CAs of the base image.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/farm
WORKDIR /src
# Dependencies first: they change less often than the code.
COPY pyproject.toml README.md ./
RUN mkdir farm workers web \
 && /opt/farm/bin/pip install . \
 && /opt/farm/bin/pip uninstall -y farm
COPY farm farm
COPY workers workers
COPY web web
RUN /opt/farm/bin/pip install --no-deps . \
 && /opt/farm/bin/farm --help > /dev/null

# Runtime: Python, git for git sources, and the environment from the builder.
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 farm \
 && useradd --system --uid 10001 --gid farm --home-dir /var/lib/farm --create-home farm \
 && mkdir -p /var/tmp/farm \
 && chown farm:farm /var/tmp/farm
COPY --from=builder /opt/farm /opt/farm
ENV PATH=/opt/farm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    FARM_WORK_DIR=/var/tmp/farm \
    FARM_DATABASE_URL=sqlite:////var/lib/farm/farm.db
USER farm
WORKDIR /var/lib/farm
EXPOSE 8000
ENTRYPOINT ["farm"]
CMD ["web", "--bind", "0.0.0.0:8000"]
