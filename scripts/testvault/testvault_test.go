package testvault

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortPairAvoidsEphemeralPorts: both ports bind, and neither is one
// the kernel could hand to an outgoing connection while a killed node is
// down (see FreePortPair).
func TestFreePortPairAvoidsEphemeralPorts(t *testing.T) {
	lo, hi := nonEphemeralPorts()
	if lo < 1024 || hi <= lo {
		t.Fatalf("range [%d, %d)", lo, hi)
	}
	for range 20 {
		p, err := FreePortPair()
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p+1 > hi {
			t.Fatalf("port pair %d/%d outside [%d, %d]", p, p+1, lo, hi)
		}
		for _, port := range []int{p, p + 1} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatalf("port %d: %v", port, err)
			}
			l.Close()
		}
	}
}
