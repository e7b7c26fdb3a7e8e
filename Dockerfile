# pycalico's one image, as Calico ships one calico/node image with many entry points:
# calico-felix, calico-confd, calico-typha, calico-kube-controllers, calicoctl, the calico and
# calico-ipam CNI plugins, BIRD (BGP), iproute2 and nftables (the dataplane's tools).
#
#   docker build -t pycalico:0.1.0 .
#   podman build --isolation=chroot --build-arg BASE=localhost/debian-base:bookworm -t pycalico:0.1.0 .
#
# BASE is any Debian bookworm image (tests/deploy/test_deploy_image.py builds on a local minbase one,
# as no registry is reachable there). Stage 1 builds the wheel and a virtualenv; stage 2 is the
# runtime with no compiler and no pip. The CNI plugins must run on the host, which has no
# Python: /usr/local/bin/install-cni (deploy/image/install-cni.sh) copies this image's
# interpreter, standard library and packages to the host's /opt/cni/pycalico.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian stable is the pin (BASE); its packages within a release get only fixes, so no versions here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libcalico libcalico
COPY calicoctl calicoctl
COPY felix felix
COPY typha typha
COPY confd confd
COPY controller controller
COPY cni cni
COPY lab lab
# PIP_ARGS: extra pip options, e.g. "--no-index --find-links /wheels" to build from a wheelhouse
# mounted with `podman build -v DIR:/wheels:ro` where no package index is reachable.
ARG PIP_ARGS=""
# hadolint ignore=SC2086
RUN python3 -m venv /opt/pycalico \
    && /opt/pycalico/bin/pip wheel $PIP_ARGS --no-deps --wheel-dir /dist . \
    && /opt/pycalico/bin/pip install $PIP_ARGS /dist/pycalico-*.whl \
    && /opt/pycalico/bin/pip uninstall -y pip setuptools

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pycalico" \
      org.opencontainers.image.description="Calico's control plane rebuilt in Python" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# bird: BIRD 1.6 (bird and birdc), the BGP daemon confd configures; iproute2 and nftables: what an
# operator uses to look at Felix's work; libc-bin gives ldd, which install-cni uses.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 bird iproute2 nftables ca-certificates libc-bin \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/bird/bird.conf /etc/bird/bird6.conf \
    && mkdir -p /var/run/calico /etc/calico/confd/config
COPY --from=build /opt/pycalico /opt/pycalico
COPY deploy/image/install-cni.sh /usr/local/bin/install-cni
ENV PATH=/opt/pycalico/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["calico-felix"]
