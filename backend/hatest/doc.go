// Package hatest runs the plugin in a 3-node Vault cluster on Raft
// integrated storage and kills the active node under load, to show that
// keys, leases and static key rotation survive a failover.
//
// The test starts three Vault servers and takes about a minute,
// so a plain `go test ./...` skips it; run it with `make test-ha` (or
// APIKEYS_HA=1 go test -count=1 ./backend/hatest/). CI does.
package hatest
