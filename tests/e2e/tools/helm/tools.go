//go:build tools

// Package tools only exists so that `go mod tidy` keeps helm.sh/helm/v3/cmd/helm,
// which tests/e2e/tools.sh builds, and its dependencies in go.sum.
// It is never compiled (build tag "tools").
package tools

import _ "helm.sh/helm/v3/cmd/helm"
