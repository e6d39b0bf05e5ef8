//go:build tools

// Package tools only exists so that `go mod tidy` keeps the commands that
// tests/e2e/tools.sh builds (`go build k8s.io/kubernetes/cmd/...`) in go.sum.
// It is never compiled (build tag "tools").
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
