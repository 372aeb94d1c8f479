FROM farm-test/busybox:latest AS build
RUN echo ok

FROM farm-test/busybox:latest
COPPY --from=build / /
