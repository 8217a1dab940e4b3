// etcd 3.6, built from the Go module proxy: recent kube-apiservers need 3.5.13 or later,
// and Debian's is 3.4.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
