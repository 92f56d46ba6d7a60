# syntax=docker/dockerfile:1
# Stages:
#   build  - the dispenser as one directory, built with PyInstaller (scripts/build-binary): it unpacks
#            nothing at start, so it runs on a read-only root and leaves nothing behind when killed
#   image  - the default: a small image whose entrypoint is the dispenser; also the place to copy it
#            from: COPY --from=<this image> /opt/etcd-config-dispenser /opt/etcd-config-dispenser
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
COPY --from=build /src/dist/etcd-config-dispenser /opt/etcd-config-dispenser
# nginx refuses to start without its certificate: it starts once both files are projected.
CMD ["/opt/etcd-config-dispenser/etcd-config-dispenser", "--prefix=/certificates", "--target=/config", \
     "--require=cert.pem", "--require=key.pem", "--signal=SIGHUP", "--", "nginx", "-g", "daemon off;"]

FROM debian:bookworm-slim AS image
COPY --from=build /src/dist/etcd-config-dispenser /opt/etcd-config-dispenser
ENTRYPOINT ["/opt/etcd-config-dispenser/etcd-config-dispenser"]
CMD ["--help"]
