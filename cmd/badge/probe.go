package main

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// probeWorkloadAPI reports whether a Workload API server answers on sock.
// Any answer counts, PermissionDenied included: the caller need not be a
// registered workload for the server to be healthy.
func probeWorkloadAPI(ctx context.Context, sock string, opts ...grpc.DialOption) error {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("unix://"+sock, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(ctx, &workload.X509BundlesRequest{}, grpc.WaitForReady(false))
	if err == nil {
		_, err = stream.Recv()
	}
	switch status.Code(err) {
	case codes.OK, codes.PermissionDenied:
		return nil
	default:
		return fmt.Errorf("no answer on %s: %v", sock, status.Convert(err).Message())
	}
}
