// Command etcd is upstream etcd's server, built from the
// go.etcd.io/etcd/server/v3 module pinned in go.mod. Upstream's own main
// package lives in the root module (go.etcd.io/etcd/v3), which is not
// published in a go-gettable form, so this three-line main stands in for it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
