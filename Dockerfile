# syntax=docker/dockerfile:1
# One small static image with the three netbridge binaries:
#   /netbridge-controller  (Deployment)
#   /netbridge-gateway     (gateway and node DaemonSets, --role=gateway|node)
#   /netbridgectl          (runbooks; handy with kubectl exec/debug)
# Build: docker build -t ghcr.io/netbridge-io/netbridge:v0.1.0 .   (see `make image`)

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first: this layer is cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
# One COPY per source folder the binaries import (deploy/deploy_test.go
# checks the list against `go list -deps ./cmd/...`): the build context
# stays small (BuildKit transfers only what is copied: never .cache/ or bin/).
COPY api/ api/
COPY bgp/ bgp/
COPY vlan/ vlan/
COPY controller/ controller/
COPY gateway/ gateway/
COPY internal/ internal/
COPY runbook/ runbook/
COPY cmd/ cmd/
ARG VERSION=dev
ARG COMMIT=unknown
# CGO_ENABLED=0: fully static, runs on distroless/static (no libc).
# -trimpath and -s -w: reproducible and small. --version of each binary
# prints VERSION and COMMIT (internal/cli; no .git in the build context).
RUN LDFLAGS="-s -w -X github.com/netbridge-io/netbridge/internal/cli.version=${VERSION} -X github.com/netbridge-io/netbridge/internal/cli.commit=${COMMIT}" && \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$LDFLAGS" \
      -o /out/netbridge-controller ./cmd/netbridge-controller && \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$LDFLAGS" \
      -o /out/netbridge-gateway ./cmd/netbridge-gateway && \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "$LDFLAGS" \
      -o /out/netbridgectl ./cmd/netbridgectl

# distroless static: no shell, no package manager, CA certificates and
# /etc/passwd with the "nonroot" user (65532) only.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/netbridge-io/netbridge" \
      org.opencontainers.image.description="netbridge controller, gateway agent and netbridgectl"
COPY --from=build /out/netbridge-controller /netbridge-controller
COPY --from=build /out/netbridge-gateway /netbridge-gateway
COPY --from=build /out/netbridgectl /netbridgectl
# Non-root by default. The gateway and node DaemonSets override this with
# runAsUser 0 because their added NET_ADMIN/NET_RAW capabilities are
# effective for root only (see deploy/base/gateway.yaml).
USER 65532:65532
ENTRYPOINT ["/netbridge-controller"]
