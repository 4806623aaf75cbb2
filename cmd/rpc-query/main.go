// Command rpc-query shows muster's services and cluster, as rpcinfo does for rpcbind.
package main

import (
	"os"

	"github.com/muster-lab/muster/internal/query"
)

func main() {
	os.Exit(query.Main(os.Args[1:], os.Stdout, os.Stderr))
}
