# Two builder stages BuildKit can run side by side, then a small final stage.
ARG BASE=farm-test/busybox:latest

FROM ${BASE} AS build
WORKDIR /src
COPY hello.txt .
RUN echo "compiling $(cat hello.txt)" && \
    sleep 1 && \
    cat hello.txt > /src/app && \
    echo "warning: nothing to optimise" >&2
ENV MODE=release
RUN wc -c /src/app

FROM ${BASE} AS assets
ARG STAMP
RUN mkdir /assets && echo "built $STAMP" > /assets/site.css && ls /assets

FROM $BASE
COPY --from=build /src/app /app
COPY --from=assets /assets /assets
CMD ["cat", "/app"]
