# syntax=docker/dockerfile:1
# Stages:
#   build  - the single-file executable, built with PyInstaller (scripts/build-binary)
#   image  - the default: a small image whose entrypoint is the dispenser; also the place to copy the
#            executable from: COPY --from=<this image> /usr/local/bin/etcd-config-dispenser /usr/local/sbin/
#   tools  - the Python package with both commands (etcd-config-push for compose's push service)
#   nginx  - nginx:bookworm wrapped by the dispenser, as compose.yaml uses it

FROM python:3.11-slim-bookworm AS build
# PyInstaller reads shared-library dependencies with objdump (binutils).
RUN apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY projector ./projector
COPY packaging ./packaging
COPY scripts/build-binary ./scripts/build-binary
RUN python -m venv .venv && scripts/build-binary

FROM python:3.11-slim-bookworm AS tools
WORKDIR /src
COPY pyproject.toml README.md ./
COPY projector ./projector
RUN pip install --no-cache-dir . && rm -rf /src
ENTRYPOINT []

FROM nginx:bookworm AS nginx
COPY --from=build /src/dist/etcd-config-dispenser /usr/local/sbin/etcd-config-dispenser
# nginx refuses to start without its certificate: it starts once both files are projected.
CMD ["/usr/local/sbin/etcd-config-dispenser", "--prefix=/certificates", "--target=/config", \
     "--require=cert.pem", "--require=key.pem", "--signal=SIGHUP", "--", "nginx", "-g", "daemon off;"]

FROM debian:bookworm-slim AS image
COPY --from=build /src/dist/etcd-config-dispenser /usr/local/bin/etcd-config-dispenser
ENTRYPOINT ["/usr/local/bin/etcd-config-dispenser"]
CMD ["--help"]
