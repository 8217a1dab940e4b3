// etcd v3.5.21 for the stand-in of quay.io/coreos/etcd:v3.5.21: the same server package the
// release binary is built from, linked here because no registry serves the official image.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
