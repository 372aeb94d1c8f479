FROM farm-test/busybox:latest AS build
WORKDIR /src
RUN echo "step one ok"
RUN echo "about to fail" && echo "compiler: error in main.c" >&2 && exit 3

FROM farm-test/busybox:latest
COPY --from=build /src /src
