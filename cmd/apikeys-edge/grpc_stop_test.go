package main

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A call that never ends (here a health Watch stream, which stays open
// until the server goes) must not keep stopGRPC from returning: it is cut
// once the grace runs out.
func TestStopGRPCCutsCallsThatOutliveTheGrace(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(l) }()

	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the first status: the call is running
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() { stopGRPC(g, 200*time.Millisecond); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("stopGRPC still waiting for a call 30 s after a 200 ms grace")
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("the running call was not cut")
	}
}
